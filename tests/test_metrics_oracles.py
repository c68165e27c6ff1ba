"""PSNR/SSIM against scikit-image, JPEG bits against the encoded bytes, the Fréchet bound cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from baselines.jpeg import JpegSpace, entropy_coded_bytes, jpeg_encode
from ulbench.metrics.frechet import FeatureStats, frechet_distance
from ulbench.metrics.psnr_ssim import psnr_db, ssim


@pytest.fixture(scope="module")
def pair(eval_images):
    x = eval_images[:12]
    y = JpegSpace(20).reconstruct(x, torch.arange(12)).x_hat
    return x, y


def test_psnr_ssim_equal_scikit_image(pair):
    x, y = pair
    xs, ys = [a.permute(1, 2, 0).numpy() for a in x], [b.permute(1, 2, 0).numpy() for b in y]
    ref_psnr = [peak_signal_noise_ratio(a, b, data_range=255) for a, b in zip(xs, ys)]
    ref_ssim = [structural_similarity(a, b, channel_axis=2, data_range=255) for a, b in zip(xs, ys)]
    np.testing.assert_allclose(psnr_db(x, y), ref_psnr, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ssim(x, y), ref_ssim, rtol=1e-6, atol=1e-6)
    assert 15 < np.mean(ref_psnr) < 40 and 0.3 < np.mean(ref_ssim) < 1


def test_ssim_other_sizes_match(eval_images):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2, 3, 45, 61), dtype=torch.uint8, generator=g)
    y = (x.int() + torch.randint(-30, 30, x.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    ref = [structural_similarity(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy(), channel_axis=2,
                                 data_range=255) for a, b in zip(x, y)]
    np.testing.assert_allclose(ssim(x, y), ref, rtol=1e-6, atol=1e-6)


def test_jpeg_bits_are_encoded_bytes(eval_images):
    x = eval_images[:5]
    rec = JpegSpace(50).reconstruct(x, torch.arange(5))
    for i, img in enumerate(x):
        data = jpeg_encode(img.permute(1, 2, 0).numpy(), 50)
        assert rec.bits["total"][i] == 8 * len(data)
        assert rec.bits["entropy"][i] == 8 * entropy_coded_bytes(data)
        # headers and tables (~600 bytes) dominate a 32×32 JPEG
        assert 400 < len(data) - entropy_coded_bytes(data) < 800


def test_jpeg_quality_orders_bits_and_psnr(eval_images):
    x = eval_images[:16]
    bpp, psnr = [], []
    for q in (5, 25, 75):
        r = JpegSpace(q).reconstruct(x, torch.arange(16))
        bpp.append(r.bits["entropy"].mean())
        psnr.append(psnr_db(x, r.x_hat).mean())
    assert bpp == sorted(bpp) and psnr == sorted(psnr)


def test_frechet_closed_form_gaussians():
    """Two Gaussians with known (mu, Σ): d² = ‖Δμ‖² + Σ(√a − √b)² for diagonal covariances."""
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.5, 2, 8), rng.uniform(0.5, 2, 8)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))  # a common rotation leaves d² unchanged
    d = frechet_distance(q @ mu1, q @ np.diag(a) @ q.T, q @ mu2, q @ np.diag(b) @ q.T)
    assert d == pytest.approx(expected, rel=1e-10)


def test_frechet_rank_deficient_is_real_and_finite():
    rng = np.random.default_rng(1)
    f1, f2 = rng.normal(size=(5, 64)), rng.normal(size=(5, 64)) + 0.1
    s1, s2 = FeatureStats(64), FeatureStats(64)
    s1.update(f1)
    s2.update(f2)
    d = frechet_distance(*s1.mean_cov(), *s2.mean_cov())
    assert np.isfinite(d) and isinstance(d, float) and d > 0
    assert frechet_distance(*s1.mean_cov(), *s1.mean_cov()) == pytest.approx(0, abs=1e-8)


def test_fewer_than_two_samples_is_an_error():
    s = FeatureStats(4)
    s.update(np.ones((1, 4)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        s.mean_cov()


def test_reads_adm_reference_npz_layout(tmp_path):
    """ADM's VIRTUAL_imagenet512.npz holds arr_0 (images), mu, sigma, mu_s, sigma_s: mu/sigma are read."""
    from ulbench.metrics.frechet import stats_from_npz

    rng = np.random.default_rng(0)
    mu, a = rng.normal(size=6), rng.normal(size=(6, 6))
    np.savez(tmp_path / "ref.npz", arr_0=np.zeros((2, 8, 8, 3), np.uint8), mu=mu, sigma=a @ a.T,
             mu_s=mu[:3], sigma_s=np.eye(3))
    m, s, n = stats_from_npz(str(tmp_path / "ref.npz"), with_n=True)
    assert np.array_equal(m, mu) and np.array_equal(s, a @ a.T) and n == -1
    np.savez(tmp_path / "bad.npz", means=mu)
    with pytest.raises(ValueError, match="needs arrays 'mu' and 'sigma'"):
        stats_from_npz(str(tmp_path / "bad.npz"))
