"""Evaluation jobs behind the CLI: a space on a dataset -> result rows; folders -> FID; reference statistics.

An `Execution` (ulbench.device) says where they compute: spaces, detectors and network metrics are moved to its
device and precision, data are read by its `num_workers`, and its device and precision go into every row."""

from __future__ import annotations

import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ulbench import __version__
from ulbench.device import Execution, describe
from ulbench.harness import EvalOutput, compute_all, evaluate_space, run_batches, shard_indices
from ulbench.metrics.frechet import FeatureStats, frechet_distance, rank_deficiency_warning
from ulbench.protocols import Batch, MetricValue, NonFiniteOutput
from ulbench.registry import METRICS, SPACES
from ulbench.results import SCHEMA_VERSION, ResultRow, config_hash, git_sha, package_versions
from ulbench.spaces import capabilities, space_info

FRECHET_METRICS = ("rfid", "kid", "is", "prc")  # the metrics that need a detector
GENERATOR_METRICS = ("gfid", "gis", "gprc")  # eval_generator: on samples against the reference split


def image_metric_classes(names: list[str]) -> list[type]:
    """The metric classes of `names`; unknown names and video metrics (which need clips) are a ValueError."""
    classes = []
    for name in names:
        entry, _ = METRICS.resolve(name)
        cls = entry.load()
        if getattr(cls, "modality", "image") != "image":
            raise ValueError(f"{name} is a {cls.modality} metric and `ulbench eval` measures images; video metrics "
                             f"are computed by the video suite: ulbench run --suite video")
        classes.append(cls)
    return classes


def build_metrics(names: list[str], num_items: int, detector: Any = None, lpips_backbone: str = "pretrained",
                  lpips_weights: str | None = None, seed: int = 0, execution: Execution | None = None) -> list:
    """Instantiate metrics by name, sharing one detector between rFID and KID; network metrics (LPIPS) on
    `execution`'s device and precision."""
    placement = {} if execution is None else {"device": execution.torch_device, "precision": execution.precision}
    out = []
    for cls in image_metric_classes(names):
        out.append(cls(detector=detector, num_items=num_items, lpips_backbone=lpips_backbone,
                       lpips_weights=lpips_weights, seed=seed, **placement))
    return out


def place(obj: Any, execution: Execution | None) -> Any:
    """Move a space, a wrapped space (`.space`) or a detector to `execution`'s device and precision; returns obj."""
    if execution is None or obj is None:
        return obj
    target = obj if hasattr(obj, "to") else getattr(obj, "space", None)
    if target is not None and hasattr(target, "to"):
        target.to(execution.torch_device, execution.precision)
    return obj


def execution_provenance(execution: Execution | None, system: Any = None) -> dict[str, Any]:
    """Device and precision for result rows: the execution's, else where `system` says it runs (else CPU fp32)."""
    if execution is not None:
        return execution.provenance()
    import torch

    inner = getattr(system, "space", system)
    device = getattr(system, "device", None) or getattr(inner, "device", None) or torch.device("cpu")
    precision = getattr(system, "precision", None) or getattr(inner, "precision", None) or "fp32"
    return {"device": describe(torch.device(device)), "precision": precision, "compile": False}


def run_provenance(dataset_info: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Provenance shared by every row of one evaluation, with the ulbench version and the row schema version."""
    return {**dataset_info, **extra, "git_sha": git_sha(), "ulbench_version": __version__,
            "schema_version": SCHEMA_VERSION, "packages": package_versions(),
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def value_failure(v: MetricValue) -> str | None:
    """Why a computed value is not a number to report: the metric's own reason (non-finite inputs), or a value or
    standard error that is NaN/inf. None: the value is "ok"."""
    if v.failed:
        return v.failed
    if v.value is None or not math.isfinite(float(v.value)):
        return f"the metric's value is {v.value} (non-finite)"
    if v.stderr is not None and not math.isfinite(float(v.stderr)):
        return f"the metric's standard error is {v.stderr} (non-finite)"
    return None


def rows_from_values(values: dict, system: str, run_id: str, base_prov: dict[str, Any]) -> list[ResultRow]:
    """One ResultRow per computed value, with the metric's own provenance merged in; a value that is not finite
    (or whose metric saw NaN/inf inputs) is status "failed" with the reason and no value, never "ok"."""
    rows = []
    for row_name, (metric, v) in values.items():
        prov = {**base_prov, **metric.provenance(), "n": v.n}
        if v.warnings:
            prov["warnings"] = list(v.warnings)
        label = metric.label if row_name == metric.name else getattr(metric, "row_label", lambda r: r)(row_name)
        failed = value_failure(v)
        rows.append(ResultRow(run_id=run_id, system=system, metric=row_name, value=None if failed else v.value,
                              stderr=None if failed else v.stderr, n=v.n, higher_is_better=metric.higher_is_better,
                              status="failed" if failed else "ok", reason=failed, label=label,
                              proxy=bool(prov.get("proxy", False)), warnings=list(v.warnings), extra=v.extra,
                              provenance=prov))
    return rows


def failed_rows(metrics: list, error: Exception, system: str, run_id: str, base_prov: dict[str, Any]
                ) -> list[ResultRow]:
    """One status-"failed" row per requested metric when the system itself produced NaN/inf (NonFiniteOutput):
    the reason names what produced it; nothing is measured from such outputs."""
    return [ResultRow(run_id=run_id, system=system, metric=m.name, value=None, status="failed", reason=str(error),
                      label=m.label, higher_is_better=m.higher_is_better,
                      provenance={**base_prov, **m.provenance(), "n": 0}) for m in metrics]


def eval_space(space_spec: str, dataset: Any, metric_names: list[str], detector: Any = None, batch_size: int = 64,
               seed: int = 0, lpips_backbone: str = "pretrained", lpips_weights: str | None = None,
               rank: int = 0, world_size: int = 1, progress: bool = False, space: Any = None,
               cache_features: bool = True, execution: Execution | None = None) -> list[ResultRow]:
    """Reconstruct `dataset` through a space and return result rows (rank 0's rows hold the merged values);
    with `execution`, the space, detector and LPIPS run on its device and precision."""
    from ulbench import dist

    t0 = time.perf_counter()
    space = place(space if space is not None else SPACES.build(space_spec), execution)
    place(detector, execution)
    metrics = build_metrics(metric_names, len(dataset), detector, lpips_backbone, lpips_weights, seed, execution)
    try:
        out = evaluate_space(space, dataset, metrics, batch_size, seed, rank, world_size, progress, cache_features,
                             num_workers=execution.num_workers if execution is not None else 0)
        error = None
    except NonFiniteOutput as e:  # the space's decoder gave NaN/inf: every metric of this run fails, naming it
        out, error = EvalOutput({}, 0), e
    n_total = dist.all_reduce_metrics(metrics, out.num_images) if world_size > 1 else out.num_images
    values = compute_all(metrics) if error is None else {}
    config = {"space": space_spec, "data": dataset.info(), "metrics": metric_names, "seed": seed,
              "detector": getattr(detector, "name", None)}
    info = space_info(space)
    prov = run_provenance(dataset.info(), {
        "system_info": info.to_dict(), "capabilities": list(capabilities(space)),
        "seed": seed, "seeds": "per image: (seed << 32) + dataset index",
        "num_images_evaluated": n_total, "batch_size": batch_size, "world_size": world_size,
        **execution_provenance(execution, space),
        "config_hash": config_hash(config), "decode_steps": info.decoder_evals if info.stochastic_decoder else None,
        "skipped_bad_files": [f for f, _ in [*getattr(dataset, "excluded_bad", []), *out.skipped]],
        "wall_time_s": round(time.perf_counter() - t0, 3)})
    run_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{config_hash(config)}"
    if error is not None:
        return failed_rows(metrics, error, getattr(space, "name", space_spec), run_id, prov)
    return rows_from_values(values, getattr(space, "name", space_spec), run_id, prov)


def dataset_features(dataset: Any, detector: Any, batch_size: int = 64, progress: bool = False,
                     num_workers: int = 0) -> np.ndarray:
    """Detector features of every image of a dataset, in index order (the detector computes on its device)."""
    feats: dict[int, np.ndarray] = {}

    class _Collect:
        def update(self, batch: Batch) -> None:
            for i, f in zip(batch.indices, batch.features(detector, "real")):
                feats[int(i)] = f

    run_batches(dataset, shard_indices(len(dataset)), [_Collect()], batch_size, 0, None, progress,
                num_workers=num_workers)
    if not feats:
        raise ValueError(f"{dataset.info().get('source', dataset.name)}: no readable images")
    return np.stack([feats[i] for i in sorted(feats)])


def stats_of(features: np.ndarray) -> FeatureStats:
    """Additive statistics of a feature matrix."""
    s = FeatureStats(features.shape[1])
    s.update(features)
    return s


def fid_between(feats_a: np.ndarray, ref: tuple[np.ndarray, np.ndarray, int] | np.ndarray,
                kid: bool = False, seed: int = 0) -> dict[str, Any]:
    """FID (and KID) between features A and features B or stored (mu, sigma, n)."""
    mu_a, s_a = stats_of(feats_a).mean_cov()
    if isinstance(ref, tuple):
        mu_b, s_b, n_b = ref
    else:
        mu_b, s_b = stats_of(ref).mean_cov()
        n_b = ref.shape[0]
    out: dict[str, Any] = {"fid": frechet_distance(mu_a, s_a, mu_b, s_b), "n_a": int(feats_a.shape[0]),
                           "n_b": int(n_b)}
    warn = [w for w in (rank_deficiency_warning(out["n_a"], feats_a.shape[1]),
                        rank_deficiency_warning(out["n_b"], feats_a.shape[1])) if w]
    out["warnings"] = sorted(set(warn))
    if kid:
        if isinstance(ref, tuple):
            raise ValueError("KID needs the reference features, not only (mu, sigma): pass a folder, not a .npz")
        from ulbench.metrics.fid import kid_from_features

        mean, std, size, _ = kid_from_features(feats_a, ref, seed=seed)
        out.update(kid=mean, kid_std=std, kid_subset_size=size)
    return out


def ref_cache_dir() -> Path:
    """Where reference statistics live: $ULBENCH_CACHE/ref or ~/.cache/ulbench/ref."""
    root = os.environ.get("ULBENCH_CACHE") or Path.home() / ".cache" / "ulbench"
    return Path(root) / "ref"


def ref_name(dataset_info: dict[str, Any], detector_prov: dict[str, Any], n: int) -> str:
    """Cache name holding dataset (and its content fingerprint), split, resolution, detector, weights hash, resize
    and n (clean-fid style)."""
    dataset = dataset_info["dataset"].replace("/", "_").replace(":", "-")
    if dataset_info.get("dataset_fingerprint"):  # two folders sharing a basename never share statistics
        dataset += f"-{dataset_info['dataset_fingerprint']}"
    parts = [dataset, dataset_info["split"],
             f"res{dataset_info['resolution']}", detector_prov["detector"],
             detector_prov["detector_weights_sha256"][:12], detector_prov["resize"].replace(" ", "_"), f"n{n}"]
    if detector_prov.get("detector_precision"):  # reduced-precision statistics never mix with fp32 ones
        parts.append(detector_prov["detector_precision"])
    return "__".join(parts)


def reference_stats(dataset: Any, detector: Any, batch_size: int = 64, num_workers: int = 0):
    """Reference statistics of a dataset split (features cached on disk), as fid.ReferenceStats."""
    from ulbench.feature_cache import RealFeatureCache
    from ulbench.metrics.fid import ReferenceStats

    cache = RealFeatureCache(dataset, detector)
    idx = np.arange(len(dataset))
    feats = cache.lookup(idx)
    if feats is None:
        feats = dataset_features(dataset, detector, batch_size, num_workers=num_workers)
        cache.store(idx, feats)
        cache.save()
    mu, sigma = stats_of(feats).mean_cov()
    prov = {**{k: dataset.info().get(k) for k in ("dataset", "dataset_fingerprint", "split", "resolution")},
            "n": len(feats)}
    return ReferenceStats(mu, sigma, len(feats), prov, features=feats)


def eval_generator(generator: Any, ref_dataset: Any, detector: Any, num_samples: int, batch_size: int = 64,
                   seed: int = 0, rank: int = 0, world_size: int = 1, progress: bool = False,
                   system: str | None = None, execution: Execution | None = None,
                   metrics: tuple[str, ...] = ("gfid",)) -> list[ResultRow]:
    """gFID: `num_samples` samples (per-index seeds, labels from the training class frequencies) against the
    reference split's statistics, through the same Fréchet engine as rFID; `metrics` may add "gis" (Inception
    Score of the samples) and "gprc" (gprecision, grecall against the reference split's features); with
    `execution` the detector runs on its device (and its device and precision are recorded)."""
    import torch
    from tqdm import tqdm

    from ulbench import dist
    from ulbench.harness import per_index_seeds
    from ulbench.metrics.fid import FID
    from ulbench.metrics.isc_prc import InceptionScore, PrecisionRecall

    t0 = time.perf_counter()
    place(detector, execution)  # the generator is placed by whoever built it (its nets and space move together)
    ref = reference_stats(ref_dataset, detector, batch_size, execution.num_workers if execution is not None else 0)
    unknown = sorted(set(metrics) - set(GENERATOR_METRICS))
    if unknown:
        raise ValueError(f"unknown generator metric(s) {unknown}; expected some of {list(GENERATOR_METRICS)}")
    chosen = [FID(detector=detector, reference=ref, name="gfid")] if "gfid" in metrics else []
    if "gis" in metrics:
        chosen.append(InceptionScore(detector=detector, num_items=num_samples, name="gis"))
    if "gprc" in metrics:
        chosen.append(PrecisionRecall(detector=detector, num_items=num_samples, reference_features=ref.features,
                                      prefix="g"))
    _, labels = ref_dataset.get(np.arange(len(ref_dataset)))
    counts = np.bincount(labels.numpy(), minlength=max(1, ref_dataset.num_classes)).astype(np.float64)
    class_probs = counts / counts.sum()
    indices = shard_indices(num_samples, rank, world_size)
    error = None
    for start in tqdm(range(0, len(indices), batch_size), desc="gen", disable=not progress, leave=False):
        chunk = indices[start:start + batch_size]
        try:
            with torch.inference_mode():
                x = generator.sample(per_index_seeds(chunk, seed), class_probs=class_probs)
        except NonFiniteOutput as e:  # the base model (or its decoder) gave NaN/inf: every metric fails, naming it
            error = e
            break
        batch = Batch(indices=chunk, x_fake=x.cpu())
        for metric in chosen:
            metric.update(batch)
    if world_size > 1:
        dist.all_reduce_metrics(chosen, len(indices))
    values = compute_all(chosen) if error is None else {}
    info = generator.info()
    config = {"generator": info, "reference": ref.provenance, "num_samples": num_samples, "seed": seed}
    ref_info = {k: v for k, v in ref_dataset.info().items() if k in ("dataset", "dataset_fingerprint")}
    prov = run_provenance({**ref_info, "split": "generated", "resolution": ref_dataset.resolution}, {
        "system_info": info, "seed": seed, "seeds": "per sample: (seed << 32) + sample index",
        "labels": "per sample from the reference split's class frequencies", "batch_size": batch_size,
        "world_size": world_size, **execution_provenance(execution, generator), "config_hash": config_hash(config),
        "wall_time_s": round(time.perf_counter() - t0, 3)})
    run_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{config_hash(config)}"
    if error is not None:
        return failed_rows(chosen, error, system or generator.name, run_id, prov)
    return rows_from_values(values, system or generator.name, run_id, prov)
