"""On-disk cache of detector features of real images, keyed by dataset fingerprint and detector provenance.

A suite compares many systems on one eval set: the real images' features are computed once
(torch-fidelity and clean-fid cache their inputs likewise). Entries are float64 .npy tables with a mask and a sha256
per entry (row): a file that cannot be read, or an entry whose bytes no longer match its checksum, is recomputed
with a one-line warning naming the file, never used and never a traceback.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
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


def row_sha256(row: np.ndarray) -> bytes:
    """sha256 digest of one entry's float64 bytes (the checksum stored beside it)."""
    return hashlib.sha256(np.ascontiguousarray(row, dtype=np.float64).tobytes()).digest()


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


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
            self._load()

    def _load(self) -> None:
        """Read the table, keeping only entries whose sha256 matches; warn (one line, naming the file) otherwise."""
        try:
            with np.load(self.path, allow_pickle=False) as z:
                if "sha256" not in z.files:  # written before entries carried checksums: nothing to verify against
                    _warn(f"feature cache {self.path} has no checksums (older ulbench); recomputing its features")
                    return
                feats, mask, sums = z["feats"], z["mask"].astype(bool), z["sha256"]
        except Exception as e:  # BadZipFile, bad CRC-32, truncated, not an npz, missing arrays: recompute
            _warn(f"feature cache {self.path} is damaged ({type(e).__name__}: {e}); recomputing its features")
            return
        if feats.shape != self.feats.shape or feats.dtype != np.float64 or sums.shape != (self.num_items, 32) \
                or mask.shape != self.mask.shape:
            _warn(f"feature cache {self.path} does not fit this dataset and detector; recomputing its features")
            return
        ok = mask & np.array([row_sha256(f) == s.tobytes() for f, s in zip(feats, sums)])
        if (mask & ~ok).any():
            _warn(f"feature cache {self.path}: {int((mask & ~ok).sum())} of {int(mask.sum())} entries do not match "
                  f"their sha256; recomputing them")
            self.dirty = True  # rewritten with the recomputed entries
        self.feats, self.mask = np.where(ok[:, None], feats, 0.0), ok

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
        sums = np.frombuffer(b"".join(row_sha256(f) for f in self.feats), dtype=np.uint8).reshape(-1, 32)
        np.savez(buf, feats=self.feats, mask=self.mask, sha256=sums)
        tmp = self.path.with_suffix(".npz.tmp")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, self.path)
        atomic_write_text(self.path.with_suffix(".json"), json.dumps(self.detector.provenance(), sort_keys=True))
        self.dirty = False
