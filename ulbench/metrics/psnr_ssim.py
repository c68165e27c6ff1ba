"""PSNR and SSIM per image in float64, batched in torch; scikit-image's functions are the test oracle.

Exact pixel statistics of uint8 images: computed in float64 on whatever device the images are on (the harness hands
CPU images), never under autocast."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ulbench.metrics.base import PerImageMean
from ulbench.protocols import Batch

DATA_RANGE = 255.0


def psnr_db(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """PSNR per image, dB, data range 255 (skimage.metrics.peak_signal_noise_ratio); inf when identical."""
    mse = ((x.double() - y.double()) ** 2).flatten(1).mean(1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(DATA_RANGE**2 / mse.cpu().numpy())


def ssim(x: torch.Tensor, y: torch.Tensor, win_size: int = 7) -> np.ndarray:
    """Mean SSIM per image (Wang et al. 2004) with skimage's defaults: 7×7 uniform window, sample covariance,
    K1=0.01, K2=0.03, data range 255, per channel, mean over the valid (un-padded) region and channels."""
    if min(x.shape[-2:]) < win_size:
        raise ValueError(f"SSIM needs images of at least {win_size}×{win_size}, got {tuple(x.shape[-2:])}")
    a, b = x.double(), y.double()
    c = a.shape[1]
    kernel = torch.full((c, 1, win_size, win_size), 1.0 / win_size**2, dtype=torch.float64, device=a.device)

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=c)

    cov_norm = win_size**2 / (win_size**2 - 1)
    ux, uy = filt(a), filt(b)
    vx = cov_norm * (filt(a * a) - ux * ux)
    vy = cov_norm * (filt(b * b) - uy * uy)
    vxy = cov_norm * (filt(a * b) - ux * uy)
    c1, c2 = (0.01 * DATA_RANGE) ** 2, (0.03 * DATA_RANGE) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3)).cpu().numpy()


class PSNR(PerImageMean):
    """Mean per-image PSNR (dB) of reconstructions against originals."""

    name, label, higher_is_better = "psnr", "PSNR (dB)", True
    needs = frozenset({"real", "fake"})

    def __init__(self, **_: Any):
        super().__init__()

    def update(self, batch: Batch) -> None:
        """Add the batch's per-image PSNR."""
        self.add_scores(psnr_db(batch.x_real, batch.x_fake))

    def provenance(self) -> dict[str, Any]:
        """Definition used."""
        return {"psnr": "mean over images of per-image PSNR, data range 255, RGB"}


class SSIM(PerImageMean):
    """Mean per-image SSIM of reconstructions against originals."""

    name, label, higher_is_better = "ssim", "SSIM", True
    needs = frozenset({"real", "fake"})

    def __init__(self, **_: Any):
        super().__init__()

    def update(self, batch: Batch) -> None:
        """Add the batch's per-image SSIM."""
        self.add_scores(ssim(batch.x_real, batch.x_fake))

    def provenance(self) -> dict[str, Any]:
        """Definition used."""
        return {"ssim": "skimage defaults: 7x7 uniform window, sample covariance, per RGB channel"}
