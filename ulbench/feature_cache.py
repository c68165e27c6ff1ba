"""On-disk cache of detector features of real images, keyed by dataset fingerprint and detector provenance.

A suite compares many systems on one eval set: the real images' features are computed once
(torch-fidelity and clean-fid cache their inputs likewise). Entries are float64 .npy tables with a mask.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ulbench.results import atomic_write_text


def dataset_fingerprint(dataset: Any) -> str:
    """Cache id of a dataset: its provenance (for folders this holds the content fingerprint, see
    `ulbench.data.folder._Source.fingerprint`) plus each file's change stamp (mtime, or CRC in a zip), so an
    edited file is never served stale features."""
    h = hashlib.sha256(json.dumps(dataset.info(), sort_keys=True, default=str).encode())
    file_id = getattr(dataset, "file_id", None) or getattr(getattr(dataset, "dataset", None), "file_id", None)
    if file_id:  # one-file datasets (ADM .npz batches): size and mtime
        h.update(file_id.encode())
    source = getattr(dataset, "source", None) or getattr(getattr(dataset, "dataset", None), "source", None)
    if source is not None:
        h.update(json.dumps(source.listing()).encode())
    return h.hexdigest()[:16]


class RealFeatureCache:
    """Features of a dataset's real images by index for one detector; load, fill, save atomically."""

    def __init__(self, dataset: Any, detector: Any, cache_dir: str | os.PathLike | None = None):
        root = Path(cache_dir or os.environ.get("ULBENCH_CACHE") or Path.home() / ".cache" / "ulbench")
        prov = detector.provenance()
        key = f"{dataset_fingerprint(dataset)}__{prov['detector']}__{prov['detector_weights_sha256'][:12]}"
        if prov.get("detector_precision"):  # reduced-precision features never mix with fp32 ones
            key += f"__{prov['detector_precision']}"
        self.path = root / "features" / f"{key}.npz"
        self.detector = detector
        self.num_items = len(dataset)
        self.feats = np.zeros((self.num_items, detector.dim))
        self.mask = np.zeros(self.num_items, dtype=bool)
        self.dirty = False
        if self.path.is_file():
            try:
                with np.load(self.path) as z:
                    if z["feats"].shape == self.feats.shape:
                        self.feats, self.mask = z["feats"], z["mask"].astype(bool)
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache is recomputed, never trusted

    def lookup(self, indices: np.ndarray) -> np.ndarray | None:
        """Cached features for all of `indices`, or None if any is missing."""
        return self.feats[indices] if self.mask[indices].all() else None

    def store(self, indices: np.ndarray, feats: np.ndarray) -> None:
        """Remember features of `indices`."""
        self.feats[indices] = feats
        self.mask[indices] = True
        self.dirty = True

    def save(self) -> None:
        """Write the table atomically (tmp file + rename)."""
        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, feats=self.feats, mask=self.mask)
        tmp = self.path.with_suffix(".npz.tmp")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, self.path)
        atomic_write_text(self.path.with_suffix(".json"), json.dumps(self.detector.provenance(), sort_keys=True))
        self.dirty = False
