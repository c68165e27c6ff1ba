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


def load_dataset(spec: str, split: str = "eval", resolution: int = 32, **kwargs: Any) -> ImageDataset:
    """Build a dataset by registry name ("embedded", "embedded-textures", "folder:DIR", "npz:PATH"; a bare path
    ending in .npz is an ADM sample batch)."""
    from ulbench.registry import DATASETS

    if spec.lower().endswith(".npz") and not spec.startswith("npz:"):
        spec = f"npz:{spec}"

    return DATASETS.build(spec, split=split, resolution=resolution, **kwargs)


class Subset(ImageDataset):
    """The first `limit` images of a dataset (for quick runs); provenance records the limit."""

    def __init__(self, dataset: ImageDataset, limit: int):
        if limit < 1:
            raise ValueError(f"--limit must be >= 1, got {limit}")
        self.dataset, self.limit = dataset, min(limit, len(dataset))
        self.name, self.split = dataset.name, dataset.split
        self.num_classes, self.resolution = dataset.num_classes, dataset.resolution
        self.skipped = getattr(dataset, "skipped", [])

    def __len__(self) -> int:
        return self.limit

    def get(self, indices):
        """Images at indices (< limit)."""
        return self.dataset.get(indices)

    def info(self) -> dict[str, Any]:
        """The parent's provenance with the limit."""
        return {**self.dataset.info(), "num_images": self.limit, "limit": self.limit}
