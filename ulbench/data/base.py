"""Dataset interface shared by the embedded set and image folders: uint8 NCHW batches by index."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class ImageDataset:
    """Indexable images: `get(indices)` -> (uint8 NCHW tensor, int64 labels); `info()` is its provenance."""

    name: str = "dataset"
    split: str = "train"
    num_classes: int = 0
    resolution: int = 0

    def __len__(self) -> int:
        raise NotImplementedError

    def get(self, indices: np.ndarray | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels at `indices` (uint8 NCHW, int64)."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """Dataset provenance: name, split, resolution, size, classes, preprocessing."""
        return {
            "dataset": self.name,
            "split": self.split,
            "resolution": self.resolution,
            "num_images": len(self),
            "num_classes": self.num_classes,
        }


class TensorImageDataset(ImageDataset):
    """An in-memory dataset (the embedded sets): all images held as one uint8 tensor."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, name: str, split: str,
                 num_classes: int, details: dict[str, Any] | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.name = name
        self.split = split
        self.num_classes = num_classes
        self.resolution = int(images.shape[-1])
        self.details = details or {}

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def get(self, indices: np.ndarray | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels at `indices`."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return self.images[idx], self.labels[idx]

    def info(self) -> dict[str, Any]:
        """Dataset provenance including how the images were made."""
        return {**super().info(), **self.details}


def load_dataset(spec: str, split: str = "eval", resolution: int | None = None, **kwargs: Any) -> ImageDataset:
    """Build a dataset by registry name ("embedded", "embedded-textures", "folder:DIR", "npz:PATH"; a bare path
    ending in .npz is an ADM sample batch); resolution None leaves each dataset its own default (embedded sets:
    32 px; folders and npz batches: the images' native size)."""
    from ulbench.registry import DATASETS

    if spec.lower().endswith(".npz") and not spec.startswith("npz:"):
        spec = f"npz:{spec}"
    if resolution is not None:
        kwargs["resolution"] = resolution
    return DATASETS.build(spec, split=split, **kwargs)


class Subset(ImageDataset):
    """The first `limit` images of a dataset (for quick runs); provenance records the limit. On a dataset that
    skips bad files (skip_bad), they are the first `limit` readable images: files are decoded in order until
    that many decode (the unreadable ones are kept in `excluded_bad`), so fewer exist only when the whole dataset
    has fewer readable images (then len() < limit)."""

    def __init__(self, dataset: ImageDataset, limit: int, scan_batch: int = 64):
        if limit < 1:
            raise ValueError(f"--limit must be >= 1, got {limit}")
        self.dataset, self.requested = dataset, limit
        self.name, self.split = dataset.name, dataset.split
        self.num_classes, self.resolution = dataset.num_classes, dataset.resolution
        self.skipped = getattr(dataset, "skipped", [])
        self.excluded_bad: list[tuple[str, str]] = []
        if getattr(dataset, "skip_bad", False) and hasattr(dataset, "get_valid"):
            good: list[int] = []
            for i in range(len(dataset)):
                if len(good) == limit:
                    break
                n_skip = len(dataset.skipped)
                _, _, kept = dataset.get_valid([i])
                self.excluded_bad += dataset.skipped[n_skip:]
                del dataset.skipped[n_skip:]  # recorded here; the evaluation never reads these files again
                good += kept.tolist()
            self.indices = np.array(good, dtype=np.int64)
            self.get_valid = self._get_valid  # the harness reads readable images and skip records through it
        else:
            self.indices = np.arange(min(limit, len(dataset)), dtype=np.int64)
        self.limit = len(self.indices)

    def __len__(self) -> int:
        return self.limit

    def get(self, indices):
        """Images at indices (< limit)."""
        return self.dataset.get(self.indices[np.asarray(indices, dtype=np.int64)])

    def _get_valid(self, indices):
        images, labels, kept = self.dataset.get_valid(self.indices[np.asarray(indices, dtype=np.int64)])
        return images, labels, np.searchsorted(self.indices, kept).astype(np.int64)

    def info(self) -> dict[str, Any]:
        """The parent's provenance with the limit (and the unreadable files passed over to reach it)."""
        out = {**self.dataset.info(), "num_images": self.limit, "limit": self.requested}
        if self.excluded_bad:
            out["skipped_bad_files"] = out.get("skipped_bad_files", 0) + len(self.excluded_bad)
        return out
