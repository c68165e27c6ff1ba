"""Issue 15 (numbers half): PSNR stays finite, non-finite outputs fail, caches heal, checkpoints are hashed and
checked, the Inception file is read once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

from baselines.jpeg import JpegSpace
from tests.conftest import write_pngs


def _flat_plus_photos(eval_images: torch.Tensor) -> torch.Tensor:
    """One flat grey image (JPEG reproduces it exactly) and seven photos."""
    flat = torch.full((1, 3, 32, 32), 128, dtype=torch.uint8)
    return torch.cat([flat, eval_images[:7]])


def test_psnr_mean_is_finite_capped_and_counts_every_image(tmp_path, eval_images):
    """Issue 15.3: one exactly reproduced image made the dataset PSNR inf; now it counts 100 dB and the others
    count too (the mean equals skimage's per-image PSNR, the flat one capped, averaged)."""
    import ulbench

    x = _flat_plus_photos(eval_images)
    folder = write_pngs(tmp_path / "imgs", x)
    (row,) = ulbench.evaluate("jpeg-q10", data=f"folder:{folder}", metrics=["psnr"], batch_size=3)
    y = JpegSpace(10).reconstruct(x, torch.arange(len(x))).x_hat
    with np.errstate(divide="ignore"):
        ref = [peak_signal_noise_ratio(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy(), data_range=255)
               for a, b in zip(x, y)]
    assert np.isinf(ref[0]) and np.isfinite(ref[1:]).all()  # the case: skimage says inf for the flat image
    expected = np.mean([100.0, *ref[1:]])  # the stated cap: 100 dB
    assert row.status == "ok" and np.isfinite(row.value), row.value
    assert row.value == pytest.approx(expected, rel=1e-9)
    assert row.extra["psnr_cap_db"] == 100.0 and row.extra["num_images_capped"] == 1
    assert "capped at 100 dB" in row.provenance["psnr"]
