"""Deterministic clips for the TF-Hub I3D oracle (benchmarks/oracle_i3d.py) and its test; numpy + scikit-image only,
so the oracle's jax venv rebuilds exactly the clips the test feeds the PyTorch port. Also a numpy TF1 resize."""

from __future__ import annotations

import numpy as np

NUM_FRAMES, SIZE = 16, 64  # 16×64×64 clips: the detector resizes to 224 anyway
CLIP_NAMES = ("noise-seed0", "moving-gradient", "pan-astronaut", "pan-coffee", "pan-chelsea", "pan-rocket")


def _box_down(img: np.ndarray, k: int) -> np.ndarray:
    h, w = img.shape[0] // k * k, img.shape[1] // k * k
    return img[:h, :w].reshape(h // k, k, w // k, k, 3).astype(np.float64).mean(axis=(1, 3))


def _pan(img: np.ndarray, k: int, y0: int, x0: int, dy: int, dx: int) -> np.ndarray:
    small = _box_down(img, k)
    frames = [small[y0 + t * dy:y0 + t * dy + SIZE, x0 + t * dx:x0 + t * dx + SIZE] for t in range(NUM_FRAMES)]
    return np.clip(np.round(np.stack(frames)), 0, 255).astype(np.uint8)


def oracle_clips() -> np.ndarray:
    """uint8 (6, 16, 64, 64, 3): seeded noise, a drifting colour gradient, pans across four bundled photos."""
    import skimage.data as data

    noise = np.random.default_rng(0).integers(0, 256, (NUM_FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    grad = np.stack([np.stack([127.5 + 120 * np.sin((xx - 3 * t) / 10 + (yy + t) / 17 + c) for c in range(3)], -1)
                     for t in range(NUM_FRAMES)])
    clips = [noise, np.clip(np.round(grad), 0, 255).astype(np.uint8),
             _pan(data.astronaut(), 4, 10, 5, 1, 3),  # 128×128: left to right across the face
             _pan(data.coffee(), 2, 60, 20, 0, 5),  # 200×300
             _pan(data.chelsea(), 2, 20, 30, 3, 2),  # 150×225: diagonal
             _pan(data.rocket(), 2, 100, 150, -2, -4)]  # 213×320: up and to the left
    return np.stack(clips)


def resize_bilinear_tf1(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32 (N, H, W, C) -> (N, h, w, C) as TF1 `tf.image.resize_bilinear` (align_corners=False, no half-pixel
    centres): source = out · in/out, lower = floor, upper = min(ceil, in − 1), lerp x then y (resize_bilinear_op.cc)."""
    x = frames.astype(np.float32)

    def weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.arange(n_out, dtype=np.float32) * (np.float32(n_in) / np.float32(n_out))  # float32, as TF
        lo = np.floor(src)
        return lo.astype(np.int64), np.minimum(np.ceil(src), n_in - 1).astype(np.int64), (src - lo)[:, None]

    y0, y1, ly = weights(x.shape[1], size[0])
    x0, x1, lx = weights(x.shape[2], size[1])
    top, bottom = x[:, y0], x[:, y1]
    top = top[:, :, x0] + (top[:, :, x1] - top[:, :, x0]) * lx
    bottom = bottom[:, :, x0] + (bottom[:, :, x1] - bottom[:, :, x0]) * lx
    return top + (bottom - top) * ly[None, :, :, None]


def preprocess_tf(clips_uint8: np.ndarray) -> np.ndarray:
    """The original FVD `preprocess`: every frame TF1-bilinear to 224×224, then 2·x/255 − 1 (float32 NTHWC)."""
    n, t = clips_uint8.shape[:2]
    frames = resize_bilinear_tf1(clips_uint8.reshape(n * t, *clips_uint8.shape[2:]), (224, 224))
    return (np.float32(2.0) * frames / np.float32(255.0) - np.float32(1.0)).reshape(n, t, 224, 224, 3)
