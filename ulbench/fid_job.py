"""The `ulbench fid` job: images A (folder or ADM .npz sample batch) against B (the same, or cached reference
statistics) -> FID and on request KID, IS (of A) and precision/recall (A generated, B real), with result rows.

A cached reference made by `ulbench ref` carries a `.json` sidecar; a reference made with another detector, weights,
resize, detector precision or resolution is refused. Its n is checked only when `ref_n` asks for one: clean-fid and
EDM2 `calculate_metrics.py` compare 50k samples against statistics of a whole dataset, so any n is accepted by
default."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ulbench.results import ResultRow, config_hash

COMPARED = ("detector", "detector_weights_sha256", "resize", "detector_precision")  # sidecar fields that must match


@dataclass
class FidInput:
    """One side of `ulbench fid`: a dataset of images, or reference statistics (mu, sigma, n) with its sidecar."""

    spec: str
    dataset: Any = None
    stats: tuple[np.ndarray, np.ndarray, int] | None = None
    sidecar: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    def image_size(self) -> int:
        """Side of the images compared: the crop, else the native size of the first readable image."""
        from ulbench.data.folder import BadImageError

        if self.dataset.resolution or not hasattr(self.dataset, "load"):
            return int(self.dataset.resolution)
        for i in range(len(self.dataset)):
            try:
                return int(self.dataset.load(i).shape[0])
            except BadImageError:
                continue
        return 0

    def fingerprint(self) -> dict[str, Any]:
        """What this input was: path, kind, and a content fingerprint."""
        from ulbench.feature_cache import dataset_fingerprint
        from ulbench.metrics.features import sha256_file

        if self.dataset is not None:
            info = self.dataset.info()
            return {"path": self.spec, "kind": "npz" if self.spec.lower().endswith(".npz") else "folder",
                    "fingerprint": dataset_fingerprint(self.dataset), "num_images": info.get("num_images"),
                    "preprocess": info.get("preprocess")}
        return {"path": self.spec, "kind": "reference statistics", "sha256": sha256_file(str(Path(self.spec))),
                "n": self.stats[2], "made_from": (self.sidecar or {}).get("dataset")}


def open_input(spec: str, resolution: int | None, skip_bad: bool) -> FidInput:
    """A folder, an ADM sample batch (.npz with arr_0) or reference statistics (.npz with mu, sigma: ADM's
    evaluator reads a file holding both as statistics, and so do we)."""
    from ulbench.data.folder import ImageFolderDataset
    from ulbench.data.npz import EXPECTED, NpzDataset, npz_arrays
    from ulbench.metrics.frechet import stats_from_npz

    if not spec.lower().endswith(".npz"):
        return FidInput(spec, dataset=ImageFolderDataset(spec, split="all", resolution=resolution,
                                                         skip_bad=skip_bad))
    names = npz_arrays(spec)
    if "mu" in names and "sigma" in names:
        sidecar_path = Path(spec).with_suffix(".json")
        sidecar = json.loads(sidecar_path.read_text()) if sidecar_path.is_file() else None
        out = FidInput(spec, stats=stats_from_npz(spec, with_n=True), sidecar=sidecar)
        if sidecar is None:
            out.warnings.append(f"{Path(spec).name} has no ulbench sidecar (.json): its detector, resize and "
                                f"resolution cannot be checked")
        return out
    if "arr_0" not in names:
        raise ValueError(f"{spec}: found arrays {sorted(names)}; expected {EXPECTED} or reference statistics "
                         f"(mu, sigma) from `ulbench ref` or ADM")
    return FidInput(spec, dataset=NpzDataset(spec, resolution=resolution))


def check_reference(ref: FidInput, detector_prov: dict[str, Any], image_size: int, ref_n: int | None) -> None:
    """Refuse (ValueError naming the fields) reference statistics made under another protocol than this run's."""
    diffs = []
    if ref.sidecar is not None:
        for key in COMPARED:
            have, want = ref.sidecar.get(key), detector_prov.get(key)
            if have != want:
                diffs.append(f"{key}: reference {have!r}, this run {want!r}")
        have_res = (ref.sidecar.get("dataset") or {}).get("resolution")
        if have_res is not None and have_res != image_size:
            diffs.append(f"resolution: reference {have_res}, this run {image_size} (--resolution crops the images)")
    if ref_n is not None and ref.stats[2] != ref_n:
        diffs.append(f"n: reference {ref.stats[2]}, asked {ref_n} (--ref-n)")
    if diffs:
        raise ValueError(f"{ref.spec} was made under another protocol ({'; '.join(diffs)}); make a matching one "
                         f"with `ulbench ref` (same --detector, --weights, --resolution) or pass matching options")


def compute_fid_job(a: FidInput, b: FidInput, detector: Any, kid: bool = False, isc: bool = False,
                    prc: bool = False, ref_n: int | None = None, batch_size: int = 64,
                    num_workers: int = 0) -> dict[str, Any]:
    """FID (and KID, IS of A, precision/recall of A against B) as one flat dict with the inputs' facts."""
    from ulbench.evaluation import dataset_features, fid_between
    from ulbench.metrics.isc_prc import inception_logits, inception_score, precision_recall

    if a.dataset is None:
        raise ValueError(f"{a.spec} holds statistics: the first argument must be images (a folder or an ADM "
                         f"sample batch); put reference statistics second")
    if b.stats is not None:
        for flag, on in (("--kid", kid), ("--prc", prc)):
            if on:
                raise ValueError(f"{flag} needs the reference images' features, and {b.spec} holds only (mu, "
                                 f"sigma): pass a folder or an ADM sample batch instead")
        check_reference(b, detector.provenance(), a.image_size(), ref_n)
    elif ref_n is not None:
        raise ValueError("--ref-n checks a cached reference statistics file; the second input is images")
    if isc:
        inception_logits(detector, np.zeros((1, detector.dim)))  # refuse the proxy before extracting anything
    t0 = time.perf_counter()
    feats_a = dataset_features(a.dataset, detector, batch_size, num_workers=num_workers)
    feats_b = b.stats if b.stats is not None else dataset_features(b.dataset, detector, batch_size,
                                                                   num_workers=num_workers)
    out = fid_between(feats_a, feats_b, kid=kid)
    out["warnings"] = sorted(set(out["warnings"] + a.warnings + b.warnings))
    if isc:
        out["is"], out["is_std"] = inception_score(inception_logits(detector, feats_a))
    if prc:
        out.update({k: v for k, v in precision_recall(feats_a, feats_b).items()})
    out["skipped_bad_files"] = {side: [name for name, _ in getattr(x.dataset, "skipped", [])]
                                for side, x in (("a", a), ("b", b)) if x.dataset is not None}
    out["wall_time_s"] = round(time.perf_counter() - t0, 3)
    return out


def fid_rows(out: dict[str, Any], a: FidInput, detector: Any, provenance: dict[str, Any]) -> list[ResultRow]:
    """One ResultRow per computed value of `compute_fid_job` (system: A's name; reference: B's fingerprint)."""
    from ulbench.metrics.features import metric_label

    name = detector.name
    specs = [("fid", metric_label("fid", detector), False, None),  # FD-EffNet on EffNet: FID only on Inception
             ("kid", metric_label("kid", detector), False, out.get("kid_std")),
             ("is", f"IS[{name}]", True, out.get("is_std")),
             ("precision", f"precision[{name}]", True, None), ("recall", f"recall[{name}]", True, None)]
    run_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{config_hash(provenance)}"
    rows = []
    for metric, label, higher, stderr in specs:
        if metric not in out:
            continue
        rows.append(ResultRow(run_id=run_id, system=Path(a.spec.rstrip("/")).name, metric=metric,
                              value=float(out[metric]), stderr=stderr, n=out["n_a"], higher_is_better=higher,
                              label=label, proxy=bool(detector.is_proxy),
                              warnings=list(out["warnings"]) if metric == "fid" else [],
                              extra={"n_ref": out["n_b"]}, provenance={**provenance, "n": out["n_a"]}))
    return rows
