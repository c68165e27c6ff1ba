"""A small trained prior approaches the exact bound on Gaussian latents (UL-SPEC §3 sanity limit)."""

import math

import pytest
import torch

from ul_models.losses import estimate_prior_nats, prior_loss
from ul_models.nets import Denoiser
from ul_models.schedule import Schedule


@pytest.mark.slow
@pytest.mark.parametrize("s", [0.5, 2.0])
def test_trained_prior_reaches_gaussian_bound(s):
    """Train the latent prior on z ~ N(0, s²I): L_prior lands within 5% of ½·log(1 + α₀²s²/σ₀²) per dim."""
    torch.manual_seed(0)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    shape, lambda0, batch = (4, 8, 8), 5.0, 64
    sched = Schedule("cosine", -10.0, lambda0)
    prior = Denoiser(4, (32, 48), emb_dim=32)
    opt = torch.optim.AdamW(prior.parameters(), lr=2e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(1)
    for step in range(1500):
        z = s * torch.randn((batch, *shape), generator=gen)
        t = (torch.rand((), generator=gen) + torch.arange(batch) / batch) % 1.0
        eps = torch.randn(z.shape, generator=gen)
        loss = prior_loss(prior.eps, z, t, eps, sched)["prior"].mean() / z[0].numel()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
        for g in opt.param_groups:
            g["lr"] = 2e-3 * min(1.0, (step + 1) / 50) * (0.1 if step > 1000 else 1.0)
        opt.step()
    prior.eval()
    z = s * torch.randn((64, *shape), generator=gen)
    mean, _ = estimate_prior_nats(prior.eps, z, sched, torch.arange(64), draws=64)
    nats_per_dim = mean.mean() / z[0].numel()
    bound = 0.5 * math.log(1 + math.exp(lambda0) * s**2)
    print(f"s={s}: L_prior {nats_per_dim:.4f} nats/dim vs I = {bound:.4f} (ratio {nats_per_dim / bound:.4f})")
    assert nats_per_dim >= bound * 0.97  # a bound: it cannot beat the mutual information (up to noise)
    assert nats_per_dim == pytest.approx(bound, rel=0.05)
