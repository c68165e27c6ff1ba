"""Datasets: the embedded default (scikit-image photographs) and real image folders (ADM centre crop)."""

from ulbench.data.base import ImageDataset, TensorImageDataset, load_dataset

__all__ = ["ImageDataset", "TensorImageDataset", "load_dataset"]
