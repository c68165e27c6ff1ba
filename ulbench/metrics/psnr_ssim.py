"""PSNR and SSIM per image in float64, batched in torch; scikit-image's functions are the test oracle.

Exact pixel statistics of uint8 images: computed in float64 on whatever device the images are on (the harness hands
CPU images), never under autocast."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ulbench.metrics.base import PerImageMean
from ulbench.protocols import Batch, MetricValue

DATA_RANGE = 255.0
# Per-image PSNR is capped here, so an image reproduced exactly (MSE 0, PSNR inf) counts as PSNR_CAP_DB and the mean
# over images stays finite and keeps every image. 100 dB is above any non-zero error of uint8 images up to 256²
# (one off-by-one subpixel at 256×256 is 101 dB), so the cap only ever replaces "identical".
PSNR_CAP_DB = 100.0
PSNR_AGGREGATION = (f"mean over images of per-image PSNR (data range 255, RGB, MSE over all subpixels), each "
                    f"capped at {PSNR_CAP_DB:g} dB (an exactly reproduced image counts {PSNR_CAP_DB:g} dB)")


def psnr_db(x: torch.Tensor, y: torch.Tensor, cap_db: float | None = None) -> np.ndarray:
    """PSNR per image, dB, data range 255 (skimage.metrics.peak_signal_noise_ratio): inf when identical, or at most
    `cap_db` when given (the metric uses PSNR_CAP_DB)."""
    mse = ((x.double() - y.double()) ** 2).flatten(1).mean(1)
    with np.errstate(divide="ignore"):
        out = 10 * np.log10(DATA_RANGE**2 / mse.cpu().numpy())
    return out if cap_db is None else np.minimum(out, cap_db)


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
    """Mean per-image PSNR (dB) of reconstructions against originals, each capped at PSNR_CAP_DB (finite, every
    image counts; the count of capped images is additive state)."""

    name, label, higher_is_better = "psnr", "PSNR (dB)", True
    needs = frozenset({"real", "fake"})

    def __init__(self, **_: Any):
        super().__init__()

    def init_state(self) -> dict[str, np.ndarray]:
        """Zero sums and zero capped images."""
        return {**super().init_state(), "capped": np.zeros(1)}

    def update(self, batch: Batch) -> None:
        """Add the batch's per-image PSNR (capped) and how many hit the cap."""
        scores = psnr_db(batch.x_real, batch.x_fake, cap_db=PSNR_CAP_DB)
        self.state["capped"] += float((scores >= PSNR_CAP_DB).sum())
        self.add_scores(scores)

    def compute(self) -> dict[str, MetricValue]:
        """One row: mean ± stderr, with the cap, the aggregation and the number of capped images in `extra`."""
        mean, se, n = self.mean_stderr()
        extra = {"psnr_cap_db": PSNR_CAP_DB, "aggregation": PSNR_AGGREGATION,
                 "num_images_capped": int(self.state["capped"][0])}
        return {self.name: MetricValue(mean, se, n, extra, failed=self.failure())}

    def provenance(self) -> dict[str, Any]:
        """Definition used."""
        return {"psnr": PSNR_AGGREGATION, "psnr_cap_db": PSNR_CAP_DB}


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
