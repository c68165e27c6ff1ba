"""Sampler: per-seed determinism, batch-size independence, and the Gaussian closed form (UL-SPEC §6)."""

import math

import pytest
import torch

from ul_models.nets import Denoiser
from ul_models.sampler import StackedRandomGenerator, sample
from ul_models.schedule import Schedule, alpha_sigma

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = Denoiser(3, (8, 16), cond_channels=2, emb_dim=16, prediction="v").eval()
    torch.nn.init.normal_(model.head.weight, std=0.1)  # non-trivial outputs (the head starts at zero)
    return model


def _run(net, seeds, eta=0.0, steps=6, micro_batch=4):
    cond = torch.stack([torch.full((2, 8, 8), float(s) / 10) for s in seeds])  # per-sample conditioning
    return sample(
        lambda z, lam, c: net.eps(z, lam, c),
        (3, 8, 8),
        torch.tensor(seeds),
        Schedule(),
        steps,
        cond=cond,
        eta=eta,
        clip_x=1.0,
        micro_batch=micro_batch,
    )


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_sample_depends_only_on_its_seed(net, eta):
    full = _run(net, [5, 6, 7, 8, 9], eta)
    assert torch.equal(full, _run(net, [5, 6, 7, 8, 9], eta))
    assert torch.equal(full[2:3], _run(net, [7], eta))  # batch of one
    assert torch.equal(full[1:4], _run(net, [6, 7, 8], eta))
    shuffled = _run(net, [9, 8, 7, 6, 5, 1, 2], eta)
    assert torch.equal(full.flip(0), shuffled[:5])
    assert not torch.equal(full[0], full[1])


def test_stacked_generator_is_per_seed():
    a = StackedRandomGenerator([1, 2, 3]).randn((4,))
    b = StackedRandomGenerator([3]).randn((4,))
    assert torch.equal(a[2], b[0]) and not torch.equal(a[0], a[1])


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_gaussian_data_sampled_with_the_right_variance(eta):
    """With the optimal denoiser for x ~ N(0, s²) the sampler's outputs have variance ≈ s²."""
    s = 0.5

    def eps_fn(z_t, logsnr, _):
        alpha, sigma = alpha_sigma(logsnr[:, None])
        x_hat = alpha * s**2 * z_t / (alpha**2 * s**2 + sigma**2)
        return (z_t - alpha * x_hat) / sigma

    # DDIM integrates the linear probability-flow ODE; ancestral sampling has O(1/steps) error: more steps
    steps, n = (64, 2000) if eta == 0 else (512, 160)
    out = sample(eps_fn, (16 if eta == 0 else 40,), torch.arange(n), Schedule(), steps, eta=eta, micro_batch=n)
    assert out.var().item() == pytest.approx(s**2, rel=0.05)
    assert abs(out.mean().item()) < 3 * s / math.sqrt(out.numel())


def test_sampler_rejects_bad_arguments(net):
    with pytest.raises(ValueError, match="eta"):
        _run(net, [1], eta=2.0)
    with pytest.raises(ValueError, match="steps"):
        _run(net, [1], steps=0)
