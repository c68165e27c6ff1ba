"""ADM sample batches: `.npz` files with `arr_0` uint8 (N, H, W, 3) images and optional `arr_1` int labels, as
guided-diffusion's `image_sample.py` writes them (Dhariwal & Nichol 2021) and its evaluator reads them."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ulbench.data.base import ImageDataset
from ulbench.data.folder import adm_center_crop

EXPECTED = "an ADM sample batch (arr_0: uint8 (N, H, W, 3) images, optional arr_1: int labels)"


def npz_arrays(path: str | Path) -> list[str]:
    """Names of the arrays in an .npz file, or a ValueError saying it is not one."""
    try:
        with zipfile.ZipFile(path) as z:
            return [n[:-4] for n in z.namelist() if n.endswith(".npy")]
    except (OSError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable .npz file ({e}); expected {EXPECTED}") from e


def _memmap_member(path: Path, name: str) -> np.ndarray | None:
    """`name` as a read-only memmap when np.savez stored it uncompressed (random access to 50k samples without
    reading them all); None for compressed members."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = struct.unpack("<4s2B4HL2L2H", f.read(30))  # zip local file header: name and extra lengths last
        f.seek(info.header_offset + 30 + local[-2] + local[-1])
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            return None
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        offset = f.tell()
    if dtype.hasobject:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def load_adm_images(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(arr_0 images, arr_1 labels or None) of an ADM batch, checked: uint8, (N, H, W, 3), labels one per image."""
    path = Path(path)
    names = npz_arrays(path)
    if "arr_0" not in names:
        raise ValueError(f"{path}: no 'arr_0' array (found {sorted(names)}); expected {EXPECTED}")
    images = _memmap_member(path, "arr_0")
    with np.load(path, allow_pickle=False) as z:
        if images is None:
            images = z["arr_0"]
        labels = np.asarray(z["arr_1"]) if "arr_1" in names else None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{path}: arr_0 is {images.dtype} {tuple(images.shape)}; expected uint8 (N, H, W, 3) "
                         f"(NHWC RGB; convert with np.clip(x, 0, 255).astype(np.uint8) and transpose NCHW to NHWC)")
    if len(images) == 0:
        raise ValueError(f"{path}: arr_0 holds no images")
    if labels is not None and (labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"{path}: arr_1 is {labels.dtype} {tuple(labels.shape)}; expected integer labels of "
                         f"shape ({len(images)},), one per image of arr_0")
    return images, labels


class NpzDataset(ImageDataset):
    """An ADM sample batch as a dataset; `resolution` applies the ADM centre crop (None or 0 keeps the native
    size). It has no splits: `split` is recorded only."""

    def __init__(self, path: str, split: str = "all", resolution: int | None = None, **_: Any):
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise ValueError(f"{path}: no such file; expected {EXPECTED}")
        self.images, labels = load_adm_images(self.path)
        self.labels = (labels if labels is not None else np.zeros(len(self.images))).astype(np.int64)
        self.num_classes = int(self.labels.max()) + 1 if labels is not None else 0
        self.name, self.split = f"npz:{self.path.name}", split
        self.native = int(self.images.shape[1]) if self.images.shape[1] == self.images.shape[2] else 0
        self.resolution = resolution or self.native
        self._crop = bool(resolution) and tuple(self.images.shape[1:3]) != (resolution, resolution)
        st = self.path.stat()
        self.file_id = f"{st.st_size}:{st.st_mtime_ns}"  # content fingerprint, as for folders (feature_cache)

    def __len__(self) -> int:
        return len(self.images)

    def get(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 NCHW images (centre-cropped when a resolution was asked) and int64 labels."""
        idx = np.asarray(indices, dtype=np.int64)
        x = np.asarray(self.images[idx])
        if self._crop:
            x = np.stack([adm_center_crop(img, self.resolution) for img in x])
        return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(self.labels[idx])

    def info(self) -> dict[str, Any]:
        """Provenance: file, native size, crop, whether labels came with it."""
        return {**super().info(), "source": str(self.path), "native_size": list(self.images.shape[1:3]),
                "labels": "arr_1" if self.num_classes else "none",
                "preprocess": f"ADM centre crop to {self.resolution}" if self._crop else "none (native size)"}
