"""Diffusion ELBO terms of Unified Latents in nats (UL-SPEC §3-5; VDM, Kingma & Gao 2023).

Denoisers enter as callables `eps_fn(z_t, logsnr) -> eps_hat`, so the same estimators serve trained
networks and the closed-form optimal denoisers used in the tests. Per-image results are nats unless the
name says bits.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ul_models.schedule import Schedule, alpha_sigma
from ul_models.seeds import STREAMS

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-image vector (B,) to (B, 1, 1, ...) so it broadcasts against `like`."""
    return v.reshape(v.shape + (1,) * (like.ndim - v.ndim)) if v.ndim < like.ndim else v


def sigmoid_weight(logsnr: torch.Tensor, bias_b: float) -> torch.Tensor:
    """ε-form sigmoid weighting w(λ) = sigmoid(b − λ) (Kingma & Gao 2023; UL-SPEC §4)."""
    return torch.sigmoid(bias_b - logsnr)


def sigmoid_weight_xform(logsnr: torch.Tensor, bias_b: float) -> torch.Tensor:
    """The weighting for the x-prediction loss: e^b·sigmoid(λ − b) = sigmoid(b − λ)·e^λ (UL-SPEC §4)."""
    return math.exp(bias_b) * torch.sigmoid(logsnr - bias_b)


def diffusion_integrand(
    eps_fn: EpsFn,
    z: torch.Tensor,
    t: torch.Tensor,
    eps: torch.Tensor,
    schedule: Schedule,
    logsnr_max: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-element ½·(−dλ/dt)·(ε − ε̂)² at z_t = α z + σ ε (VDM eq. 17), and λ_t; one t per image."""
    tb = _bcast(t, z)
    logsnr = schedule.logsnr(tb, logsnr_max)
    alpha, sigma = alpha_sigma(logsnr)
    z_t = alpha * z + sigma * eps
    eps_hat = eps_fn(z_t, logsnr)
    integrand = 0.5 * (-schedule.dlogsnr_dt(tb, logsnr_max)) * (eps - eps_hat).square()
    return integrand, logsnr.expand_as(z)


def kl_to_standard_normal(z: torch.Tensor, logsnr_end: float) -> torch.Tensor:
    """Closed-form KL(q(z_1|z) ‖ N(0, I)) per image: ½·Σ(α₁²z² + σ₁² − log σ₁² − 1) (UL-SPEC §3)."""
    lam = torch.as_tensor(logsnr_end, dtype=z.dtype, device=z.device)
    alpha_sq, sigma_sq = torch.sigmoid(lam), torch.sigmoid(-lam)
    per_element = 0.5 * (alpha_sq * z.square() + sigma_sq - torch.log(sigma_sq) - 1.0)
    return per_element.flatten(1).sum(1)


def prior_loss(
    eps_fn: EpsFn,
    z_clean: torch.Tensor,
    t: torch.Tensor,
    eps: torch.Tensor,
    schedule: Schedule,
    logsnr_max: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """L_prior(x) ≥ KL(q(z₀|x) ‖ p(z₀)), nats per image: unit weight, λ₀ → λ_min, + z₁ term (UL-SPEC §3)."""
    integrand, _ = diffusion_integrand(eps_fn, z_clean, t, eps, schedule, logsnr_max)
    diffusion = integrand.flatten(1).sum(1)
    kl_end = kl_to_standard_normal(z_clean, schedule.logsnr_min)
    return {"prior": diffusion + kl_end, "prior_diffusion": diffusion, "prior_kl_end": kl_end}


def decoder_loss(
    eps_fn: EpsFn,
    x: torch.Tensor,
    t: torch.Tensor,
    eps: torch.Tensor,
    schedule: Schedule,
    bias_b: float | None,
) -> dict[str, torch.Tensor]:
    """Sigmoid-weighted L_dec(x|z₀) and the unweighted (w ≡ 1) ELBO per image in nats (UL-SPEC §4)."""
    integrand, logsnr = diffusion_integrand(eps_fn, x, t, eps, schedule)
    elbo = integrand.flatten(1).sum(1) + kl_to_standard_normal(x, schedule.logsnr_min).detach()
    if bias_b is None:
        weighted = integrand.flatten(1).sum(1)
    else:
        weighted = (sigmoid_weight(logsnr, bias_b) * integrand).flatten(1).sum(1)
    return {"dec": weighted, "dec_elbo": elbo}


def stage1_objective(prior_nats: torch.Tensor, dec_nats: torch.Tensor, c_lf: float) -> torch.Tensor:
    """L_stage1 = L_prior + c_lf·L_dec per image (UL-SPEC §5)."""
    return prior_nats + c_lf * dec_nats


def gaussian_kl_nats(z_clean: torch.Tensor, logsnr_e: torch.Tensor | None, lambda0: float) -> torch.Tensor:
    """KL(N(α z, σ² I) ‖ N(0, I)) per image in nats, α² = sigmoid(λ), σ² = sigmoid(−λ) at λ = λ_e or λ₀: the
    fixed-Gaussian-prior rate of reading (b) of the separate-prior ablation (UL-SPEC §7) [ours]."""
    lam = torch.full_like(z_clean, lambda0) if logsnr_e is None else logsnr_e
    a2, s2 = torch.sigmoid(lam), torch.sigmoid(-lam)
    return 0.5 * (a2 * z_clean.pow(2) + s2 - 1 - torch.log(s2)).flatten(1).sum(1)


def bits_per_pixel(nats: torch.Tensor | np.ndarray | float, height: int, width: int):
    """nats per image → bits per pixel, nats/(ln 2·H·W) with H·W pixels, not subpixels (UL-SPEC §3)."""
    return nats / (math.log(2.0) * height * width)


def bits_per_latent_dim(nats: torch.Tensor | np.ndarray | float, latent_numel: int):
    """nats per image → bits per latent dimension, nats/(ln 2·numel(z)) (UL-SPEC §3)."""
    return nats / (math.log(2.0) * latent_numel)


def mix_seed(seed: int, stream: int) -> int:
    """A 63-bit generator seed from (seed, stream) via numpy's SeedSequence, so streams never collide."""
    mask = 0xFFFFFFFFFFFFFFFF  # negative ints map to their 64-bit two's complement
    entropy = [int(seed) & mask, int(stream) & mask]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))


def estimate_prior_nats(
    eps_fn: EpsFn,
    z_clean: torch.Tensor,
    schedule: Schedule,
    seeds: torch.Tensor,
    draws: int = 64,
    logsnr_max: torch.Tensor | None = None,
    stream: int = STREAMS["prior_bits"],
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image L_prior mean and standard error over `draws` (t, ε) draws seeded per image (UL-SPEC §3).

    t is stratified per image (t_k = (u + k/draws) mod 1): still unbiased, lower variance; the reported
    standard error treats the draws as independent, which over-states it. Each image is evaluated in its
    own batch of `draws`, so results do not depend on how images are batched. Draws come from CPU generators
    and move to `z_clean`'s device; the per-image nats come back as float64 numpy.
    """
    if draws < 2:
        raise ValueError(f"draws must be >= 2 to give a standard error, got {draws}; use e.g. 64")
    means, stderrs = [], []
    for i in range(z_clean.shape[0]):
        gen = torch.Generator().manual_seed(mix_seed(int(seeds[i]), stream))
        u = torch.rand((), generator=gen, dtype=torch.float64)
        t = ((u + torch.arange(draws, dtype=torch.float64) / draws) % 1.0).to(z_clean.device, z_clean.dtype)
        eps = torch.randn((draws,) + tuple(z_clean.shape[1:]), generator=gen, dtype=z_clean.dtype)
        eps = eps.to(z_clean.device)  # drawn on CPU: the same (t, ε) on every device
        z = z_clean[i : i + 1].expand(draws, *z_clean.shape[1:])
        top = None if logsnr_max is None else logsnr_max[i : i + 1].expand_as(z)
        with torch.no_grad():
            nats = prior_loss(eps_fn, z, t, eps, schedule, top)["prior"].double().cpu().numpy()
        means.append(nats.mean())
        stderrs.append(nats.std(ddof=1) / math.sqrt(draws))
    return np.asarray(means, dtype=np.float64), np.asarray(stderrs, dtype=np.float64)
