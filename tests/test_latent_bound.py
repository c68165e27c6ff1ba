"""The UL-style bound for deterministic latent spaces (UL-SPEC §3, §6) against Gaussian closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ul_models.latent_bound import BoundConfig, BoundedSpace, channel_stats, fit_latent_bound, load_latent_bound

LAMBDA0 = 5.0
ALPHA0_SQ, SIGMA0_SQ = 1 / (1 + math.exp(-LAMBDA0)), 1 / (1 + math.exp(LAMBDA0))
FAST = dict(channels=(16, 32), emb_dim=32, steps=600, batch_size=64, draws=16, num_threads=1)


def gaussian_mi_nats(snr_times_var: float) -> float:
    """I(z; α₀z + σ₀ε) = ½·log(1 + α₀²·Var/σ₀²) nats for scalar Gaussian z."""
    return 0.5 * math.log1p(ALPHA0_SQ * snr_times_var / SIGMA0_SQ)


def test_channel_stats_normalise_to_unit_variance():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 3, 4, 4, generator=g) * torch.tensor([0.1, 2.0, 30.0]).reshape(1, 3, 1, 1) + 5.0
    mu, std = channel_stats(z)
    zn = (z.double() - mu.reshape(1, -1, 1, 1)) / std.reshape(1, -1, 1, 1)
    np.testing.assert_allclose(zn.mean((0, 2, 3)).numpy(), 0.0, atol=1e-12)
    np.testing.assert_allclose(zn.var((0, 2, 3), unbiased=False).numpy(), 1.0, atol=1e-12)


@pytest.fixture(scope="module")
def gaussian_bounds(tmp_path_factory, one_thread):
    """Two fitted bounds: i.i.d. Gaussian latents, and latents whose 4×8×8 entries share one Gaussian value."""
    g = torch.Generator().manual_seed(1)
    iid = torch.randn(1024, 4, 8, 8, generator=g) * 3.0 + 1.0  # the scale must not matter: normalised
    shared = torch.randn(1024, 1, 1, 1, generator=g).expand(1024, 4, 8, 8).contiguous()
    root = tmp_path_factory.mktemp("bounds")
    cfg = BoundConfig(**FAST)
    return {name: (z, fit_latent_bound(z, cfg, root / name), root / name)
            for name, z in (("iid", iid), ("shared", shared))}


def test_bound_of_iid_gaussian_latents_is_their_mutual_information(gaussian_bounds):
    """Unit-variance i.i.d. latents: the bound ≥ I and, after 600 steps, within 5% of 256·½log(1+α₀²/σ₀²)."""
    z, bound, _ = gaussian_bounds["iid"]
    nats, se = bound.nats(z[:256], torch.arange(256))
    mi = 256 * gaussian_mi_nats(1.0)
    assert nats.mean() > mi * 0.99  # an upper bound on I, up to the estimator's noise
    assert nats.mean() < mi * 1.05, (nats.mean(), mi)
    assert (se > 0).all()


def test_bound_sees_structure_shared_value_costs_far_less(gaussian_bounds):
    """256 copies of one Gaussian: I = ½log(1 + 256·α₀²/σ₀²) ≈ 5.3 nats, not 256× the per-dimension 2.5 nats."""
    z, bound, _ = gaussian_bounds["shared"]
    nats, _ = bound.nats(z[:64], torch.arange(64))
    mi_shared, mi_iid = gaussian_mi_nats(256.0), 256 * gaussian_mi_nats(1.0)
    assert nats.mean() > 0.95 * mi_shared
    assert nats.mean() < 0.1 * mi_iid, (nats.mean(), mi_shared, mi_iid)


def test_saved_bound_reloads_to_the_same_numbers_and_refuses_another_config(gaussian_bounds):
    z, bound, run_dir = gaussian_bounds["iid"]
    again = load_latent_bound(run_dir)
    a, _ = bound.nats(z[:8], torch.arange(8))
    b, _ = again.nats(z[:8], torch.arange(8))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="another latent prior config"):
        fit_latent_bound(z, BoundConfig(**{**FAST, "steps": 601, "lr": 1e-3}), run_dir)


def test_bounded_pixel_space_reports_ul_bound_rows_independent_of_batch_size(tmp_path, eval_images, one_thread):
    """Pixels through eval: the space's own 24 bpp plus bpp_ul_bound (with stderr); batch size changes nothing."""
    from baselines.pixel import PixelSpace
    from ulbench.data.base import TensorImageDataset
    from ulbench.evaluation import eval_space

    space = PixelSpace()
    x = eval_images[:96]
    z = space.encode(x, torch.arange(96))
    bound = fit_latent_bound(z, BoundConfig(channels=(16,), emb_dim=16, steps=20, batch_size=16, draws=4,
                                            num_threads=1), tmp_path / "b")
    data = TensorImageDataset(eval_images[96:120], torch.zeros(24), "embedded-slice", "eval", 1)
    rows = {bs: {r.metric: r for r in eval_space("pixel", data, ["bpp"], batch_size=bs,
                                                 space=BoundedSpace(space, bound))} for bs in (5, 24)}
    assert rows[5]["bpp"].value == 24.0
    b5, b24 = rows[5]["bpp_ul_bound"], rows[24]["bpp_ul_bound"]
    assert b5.value > 0 and b5.stderr > 0  # an untrained prior may exceed 24: it is a bound, not a code
    assert b5.value == pytest.approx(b24.value, rel=1e-12)
    assert b5.extra["estimator_stderr"] > 0
    assert "ul_bound" in rows[5]["bpp"].provenance["system_info"]["details"]


def test_bound_rejects_non_finite_latents():
    z = torch.zeros(4, 2, 4, 4)
    z[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        fit_latent_bound(z, BoundConfig(steps=1))


def test_interrupted_fit_resumes_to_identical_weights(tmp_path, monkeypatch, one_thread):
    """A fit stopped after step 5 resumes from its step-4 checkpoint and ends bit-identical to an uninterrupted one."""
    import ul_models.latent_bound as lb

    monkeypatch.setattr(lb, "CHECKPOINT_EVERY", 2)
    z = torch.randn(32, 2, 4, 4, generator=torch.Generator().manual_seed(3))
    cfg = BoundConfig(channels=(8,), emb_dim=8, steps=8, batch_size=8, draws=2, num_threads=1)
    whole = fit_latent_bound(z, cfg, tmp_path / "whole")
    from ul_models.training.loop import Loop

    real_step, calls = Loop.step, []

    def stop_after_five(*args, **kwargs):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(1)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(Loop, "step", stop_after_five)
    with pytest.raises(KeyboardInterrupt):
        fit_latent_bound(z, cfg, tmp_path / "cut")
    assert not (tmp_path / "cut" / lb.BOUND_JSON).exists()  # unfinished: no summary, so never reused as done
    monkeypatch.setattr(Loop, "step", real_step)
    resumed = fit_latent_bound(z, cfg, tmp_path / "cut")
    for (name, a), b in zip(whole.net.state_dict().items(), resumed.net.state_dict().values()):
        assert torch.equal(a, b), name
