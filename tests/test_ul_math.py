"""UL schedules and ELBO terms against closed forms (UL-SPEC §1-4): exact where the bound can be exact."""

import math

import numpy as np
import pytest
import torch

from ul_models.losses import (
    bits_per_latent_dim,
    bits_per_pixel,
    decoder_loss,
    estimate_prior_nats,
    kl_to_standard_normal,
    prior_loss,
    sigmoid_weight,
    sigmoid_weight_xform,
    stage1_objective,
)
from ul_models.schedule import Schedule, alpha_sigma, resolution_shift


def gaussian_eps_fn(s: float):
    """Optimal ε̂ for z ~ N(0, s²I): E[z|z_t] = α s² z_t/(α² s² + σ²), ε̂ = (z_t − α ẑ)/σ."""

    def eps_fn(z_t, logsnr):
        alpha, sigma = alpha_sigma(logsnr)
        z_hat = alpha * s**2 * z_t / (alpha**2 * s**2 + sigma**2)
        return (z_t - alpha * z_hat) / sigma

    return eps_fn


def marginal_kl(s: float, logsnr_min: float) -> float:
    """KL(q(z₁) ‖ N(0, 1)) per dimension of the marginal N(0, α₁² s² + σ₁²)."""
    v = 1 / (1 + math.exp(-logsnr_min)) * s**2 + 1 / (1 + math.exp(logsnr_min))
    return 0.5 * (v - 1 - math.log(v))


@pytest.mark.parametrize("kind,shift", [("cosine", 0.0), ("cosine", resolution_shift(32)), ("uniform", 0.0)])
def test_schedule_end_points_monotone_and_derivative(kind, shift):
    sched = Schedule(kind, -10.0, 5.0, shift)
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    lam = sched.logsnr(t)
    assert lam[0].item() == pytest.approx(5.0, abs=1e-9)
    assert lam[-1].item() == pytest.approx(-10.0, abs=1e-9)
    assert (lam[1:] < lam[:-1]).all()
    mid = t[1:-1]
    h = 1e-6
    numeric = (sched.logsnr(mid + h) - sched.logsnr(mid - h)) / (2 * h)
    assert torch.allclose(sched.dlogsnr_dt(mid), numeric, rtol=1e-5)
    # ∫(−dλ/dt) dt = λ_max − λ_min: the end points fix the unit-weight ELBO
    integral = torch.trapezoid(-sched.dlogsnr_dt(t), t).item()
    assert integral == pytest.approx(15.0, rel=2e-3)


def test_per_element_logsnr_max_and_alpha_sigma():
    sched = Schedule("cosine", -10.0, 5.0)
    top = torch.tensor([5.0, 2.0, -3.0], dtype=torch.float64)
    assert torch.allclose(sched.logsnr(torch.zeros(3, dtype=torch.float64), top), top)
    assert torch.allclose(
        sched.logsnr(torch.ones(3, dtype=torch.float64), top), torch.full((3,), -10.0).double()
    )
    alpha, sigma = alpha_sigma(torch.tensor(5.0, dtype=torch.float64))
    assert alpha.item() == pytest.approx(0.99665, abs=2e-5) and sigma.item() == pytest.approx(
        0.08182, abs=2e-5
    )
    lam = torch.linspace(-12, 12, 25, dtype=torch.float64)
    a, s = alpha_sigma(lam)
    assert torch.allclose(a**2 + s**2, torch.ones_like(lam))
    assert torch.allclose(torch.log(a**2 / s**2), lam)
    with pytest.raises(ValueError, match="logsnr_min < logsnr_max"):
        Schedule("cosine", 5.0, -10.0)


@pytest.mark.parametrize("bias_b", [-2.0, 0.0, 3.0])
def test_sigmoid_weight_xform_equivalence(bias_b):
    lam = torch.linspace(-15, 15, 61, dtype=torch.float64)
    assert torch.allclose(sigmoid_weight(lam, bias_b) * torch.exp(lam), sigmoid_weight_xform(lam, bias_b))
    assert (sigmoid_weight(lam, bias_b) <= 1).all()


def test_kl_to_standard_normal_matches_torch_distributions():
    z = torch.randn(3, 4, 2, 2, dtype=torch.float64)
    lam = -2.0
    alpha, sigma = alpha_sigma(torch.tensor(lam, dtype=torch.float64))
    q = torch.distributions.Normal(alpha * z, sigma)
    ref = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).flatten(1).sum(1)
    assert torch.allclose(kl_to_standard_normal(z, lam), ref)


def test_units():
    assert bits_per_pixel(math.log(2) * 32 * 32, 32, 32) == pytest.approx(1.0)
    assert bits_per_latent_dim(math.log(2) * 256, 256) == pytest.approx(1.0)
    assert stage1_objective(torch.tensor(1.0), torch.tensor(2.0), 10.0).item() == 21.0


@pytest.mark.parametrize("s,logsnr_min", [(0.3, -10.0), (1.0, -10.0), (3.0, -12.0), (1.0, -6.0)])
def test_prior_bound_exact_for_gaussian_latents(s, logsnr_min):
    """E[L_prior] = ½·log(1 + α₀²s²/σ₀²) + KL(q(z₁)‖N(0,I)) per dim, optimal denoiser (UL-SPEC §3)."""
    gen = torch.Generator().manual_seed(0)
    n, d, lambda0 = 50_000, 8, 5.0
    sched = Schedule("cosine", logsnr_min, lambda0)
    z = s * torch.randn(n, d, generator=gen, dtype=torch.float64)
    t = (torch.rand((), generator=gen, dtype=torch.float64) + torch.arange(n, dtype=torch.float64) / n) % 1.0
    eps = torch.randn(n, d, generator=gen, dtype=torch.float64)
    nats_per_dim = prior_loss(gaussian_eps_fn(s), z, t, eps, sched)["prior"].mean().item() / d
    mutual_info = 0.5 * math.log(1 + math.exp(lambda0) * s**2)
    expected = mutual_info + marginal_kl(s, logsnr_min)
    assert nats_per_dim == pytest.approx(expected, rel=0.01)
    if logsnr_min <= -10:
        assert marginal_kl(s, logsnr_min) < 1e-3 * max(s**2, 1)


def test_prior_bound_learned_variance_per_element():
    """With per-element λ_e each element's bound is ½·log(1 + e^{λ_e} s²) (UL-SPEC §7 learned variance)."""
    gen = torch.Generator().manual_seed(1)
    n, s = 40_000, 1.0
    top = torch.tensor([5.0, 2.0, 0.0, -3.0], dtype=torch.float64)
    sched = Schedule("cosine", -10.0, 5.0)
    z = s * torch.randn(n, 4, generator=gen, dtype=torch.float64)
    t = (torch.rand((), generator=gen, dtype=torch.float64) + torch.arange(n, dtype=torch.float64) / n) % 1.0
    eps = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    out = prior_loss(gaussian_eps_fn(s), z, t, eps, sched, top.expand(n, 4))["prior"].mean().item()
    expected = sum(0.5 * math.log(1 + math.exp(v) * s**2) for v in top.tolist()) + 4 * marginal_kl(s, -10.0)
    assert out == pytest.approx(expected, rel=0.01)


def test_eval_estimator_per_image_mean_and_stderr():
    s, sched = 1.0, Schedule("cosine", -10.0, 5.0)
    z = s * torch.randn(6, 4, 2, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    seeds = torch.arange(10, 16)
    mean, se = estimate_prior_nats(gaussian_eps_fn(s), z, sched, seeds, draws=256)
    assert mean.dtype == np.float64 and mean.shape == (6,) and (se > 0).all()
    again, _ = estimate_prior_nats(gaussian_eps_fn(s), z[3:5], sched, seeds[3:5], draws=256)
    assert np.array_equal(mean[3:5], again)  # depends on the image's seed only

    # per image, E_ε[L] = KL(q(z₀|x)‖q(z₀)) − KL(q(z₁|x)‖q(z₁)) + KL(q(z₁|x)‖N(0, I)) for the exact denoiser
    def kl(mean_, var_q, var_p):
        return 0.5 * (var_q / var_p + mean_**2 / var_p - 1 - np.log(var_q / var_p))

    zz = z.flatten(1).numpy()
    a0sq, s0sq = 1 / (1 + math.exp(-5.0)), 1 / (1 + math.exp(5.0))
    a1sq, s1sq = 1 / (1 + math.exp(10.0)), 1 / (1 + math.exp(-10.0))
    expected = (
        kl(math.sqrt(a0sq) * zz, s0sq, a0sq * s**2 + s0sq)
        - kl(math.sqrt(a1sq) * zz, s1sq, a1sq * s**2 + s1sq)
        + kl(math.sqrt(a1sq) * zz, s1sq, 1.0)
    ).sum(1)
    z_scores = (mean - expected) / se
    assert np.abs(z_scores).max() < 5


def _posterior_precision(logsnr, s, lambda0):
    return 1 / s**2 + math.exp(lambda0) + torch.exp(logsnr)


def _decoder_setup(s: float, lambda0: float, n: int = 20_000):
    """Gaussian pixels x ~ N(0, s²), z₀ = α₀x + σ₀η of the same shape, and the optimal ε̂(x_t; λ, z₀)."""
    gen = torch.Generator().manual_seed(3)
    x = s * torch.randn(n, 3, 4, 4, generator=gen, dtype=torch.float64)
    a0, s0 = alpha_sigma(torch.tensor(lambda0, dtype=torch.float64))
    z0 = a0 * x + s0 * torch.randn(x.shape, generator=gen, dtype=torch.float64)

    def eps_fn(x_t, logsnr):
        alpha, sigma = alpha_sigma(logsnr)
        mean = (x_t * alpha / sigma**2 + z0 * a0 / s0**2) / _posterior_precision(logsnr, s, lambda0)
        return (x_t - alpha * mean) / sigma

    t = (torch.rand((), generator=gen, dtype=torch.float64) + torch.arange(n, dtype=torch.float64) / n) % 1.0
    eps = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    return x, eps_fn, t, eps


UNIFORM_X = Schedule("uniform", -10.0, 10.0)  # low-variance estimator: the 1% checks
COSINE_X = Schedule("cosine", -10.0, 10.0, resolution_shift(32))  # the training schedule: a z-score check


def _check(per_image: torch.Tensor, dims: int, expected: float, sched: Schedule) -> None:
    value = per_image.mean().item() / dims
    if sched.kind == "uniform":
        assert value == pytest.approx(expected, rel=0.01)
    else:
        stderr = per_image.std().item() / math.sqrt(per_image.numel()) / dims
        assert abs(value - expected) < 4 * stderr and stderr < 0.05 * expected


@pytest.mark.parametrize("sched", [UNIFORM_X, COSINE_X], ids=["uniform", "cosine-shifted"])
@pytest.mark.parametrize("s", [0.5, 2.0])
def test_decoder_elbo_unweighted_matches_analytic(s, sched):
    """w ≡ 1: E[L_dec] = ½·log(P(λ_max)/P(λ_min)) per dim with P = 1/s² + e^{λ₀} + e^{λ} (plus the end KL)."""
    lambda0 = 5.0
    x, eps_fn, t, eps = _decoder_setup(s, lambda0)
    out = decoder_loss(eps_fn, x, t, eps, sched, bias_b=None)
    dims = x[0].numel()
    precision = _posterior_precision(torch.tensor([10.0, -10.0], dtype=torch.float64), s, lambda0)
    diffusion = 0.5 * math.log(precision[0].item() / precision[1].item())
    a1sq, s1sq = 1 / (1 + math.exp(10.0)), 1 / (1 + math.exp(-10.0))
    end_kl = 0.5 * (a1sq * s**2 + s1sq - math.log(s1sq) - 1)
    _check(out["dec_elbo"], dims, diffusion + end_kl, sched)
    _check(out["dec"], dims, diffusion, sched)


@pytest.mark.parametrize("sched", [UNIFORM_X, COSINE_X], ids=["uniform", "cosine-shifted"])
@pytest.mark.parametrize("bias_b", [-2.0, 2.0])
def test_decoder_sigmoid_weighted_matches_quadrature(bias_b, sched):
    s, lambda0 = 1.0, 5.0
    x, eps_fn, t, eps = _decoder_setup(s, lambda0)
    out = decoder_loss(eps_fn, x, t, eps, sched, bias_b=bias_b)["dec"]
    lam = torch.linspace(-10, 10, 200_001, dtype=torch.float64)
    integrand = 0.5 * sigmoid_weight(lam, bias_b) * torch.exp(lam) / _posterior_precision(lam, s, lambda0)
    _check(out, x[0].numel(), torch.trapezoid(integrand, lam).item(), sched)
