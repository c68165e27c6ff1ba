"""The embedded default data: deterministic crops of the photographs bundled in scikit-image.

Each source photo is one class. It is resized (PIL box filter) so its short side is 8·res, then split
by width: the left 75% is the *train* region, the right 25% the *eval* region, so the splits never share
a source pixel. Windows of 2·res px (stride res/2 in train, res/4 in eval, to give the Fréchet statistics
more samples) are box-downsampled 2× to res×res. At res=32 this gives 1,430 train and 700 eval images
over 9 classes. `embedded_textures` does the same on scikit-image's
grey photographs and textures (replicated to RGB): a different image distribution, for the "other training
data" ablation (UL-SPEC §7).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image

from ulbench.data.base import TensorImageDataset

PHOTOS = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "retina", "rocket",
          "motorcycle_left", "motorcycle_right")
TEXTURES = ("camera", "moon", "brick", "grass", "gravel", "coins", "clock", "cell", "page")
EVAL_FRACTION = 0.25  # right-hand share of each photo's width kept for the eval split


def _source(name: str) -> np.ndarray:
    """One bundled scikit-image picture as uint8 HxWx3."""
    import skimage.data

    if name.startswith("motorcycle_"):
        left, right, _ = skimage.data.stereo_motorcycle()
        img = left if name.endswith("left") else right
    else:
        img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3].astype(np.uint8))


def _tiles(region: np.ndarray, resolution: int, stride: int) -> list[np.ndarray]:
    """2·res windows at `stride`, each box-downsampled 2× to res×res (uint8)."""
    win = 2 * resolution
    h, w, _ = region.shape
    out = []
    for top in range(0, h - win + 1, stride):
        for left in range(0, w - win + 1, stride):
            crop = region[top:top + win, left:left + win].astype(np.float64)
            small = crop.reshape(resolution, 2, resolution, 2, 3).mean(axis=(1, 3))
            out.append(np.floor(small + 0.5).astype(np.uint8))
    return out


@functools.lru_cache(maxsize=8)
def _build(names: tuple[str, ...], split: str, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Make the crops of `names` for one split (deterministic, cached per process)."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    if resolution < 8 or resolution % 2:
        raise ValueError(f"resolution must be an even number >= 8, got {resolution}")
    images, labels = [], []
    for label, name in enumerate(names):
        img = _source(name)
        h, w, _ = img.shape
        short = min(8 * resolution, min(h, w))
        scale = short / min(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        img = np.asarray(Image.fromarray(img).resize(size, Image.BOX))
        cut = int(round(img.shape[1] * (1 - EVAL_FRACTION)))
        region = img[:, :cut] if split == "train" else img[:, cut:]
        tiles = _tiles(region, resolution, max(1, resolution // (2 if split == "train" else 4)))
        images += tiles
        labels += [label] * len(tiles)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels, dtype=torch.int64)


def _dataset(names: tuple[str, ...], name: str, split: str, resolution: int) -> TensorImageDataset:
    x, y = _build(names, split, resolution)
    details = {"sources": list(names), "preprocess": "PIL box resize short side 8*res; 2*res windows stride "
               "res/2 (train) or res/4 (eval); 2x box downsample", "eval_region": f"right {EVAL_FRACTION:.0%} of width"}
    return TensorImageDataset(x, y, name=name, split=split, num_classes=len(names), details=details)


def embedded_photos(split: str = "eval", resolution: int = 32, **_: object) -> TensorImageDataset:
    """Crops of scikit-image's colour photographs, one class per photo (ARCHITECTURE.md §embedded default)."""
    return _dataset(PHOTOS, "embedded", split, resolution)


def embedded_textures(split: str = "train", resolution: int = 32, **_: object) -> TensorImageDataset:
    """Crops of scikit-image's grey photographs and textures: other training data (UL-SPEC §7)."""
    return _dataset(TEXTURES, "embedded-textures", split, resolution)
