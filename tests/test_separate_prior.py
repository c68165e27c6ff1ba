"""Separate prior, both readings (issue 14 item 3, UL-SPEC §7): (a) stop-gradient prior and no encoder rate;
(b) the same prior plus a closed-form Gaussian KL rate on the encoder."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import TINY_UL
from ul_models.config import ULConfig
from ul_models.losses import gaussian_kl_nats
from ul_models.model import build_stage1
from ul_models.training.noise import SampleNoise


def test_gaussian_kl_matches_torch_distributions():
    z = torch.randn(3, 4, 2, 2)
    for lam in (5.0, 0.0, -2.0):
        a, s = torch.sigmoid(torch.tensor(lam)).sqrt(), torch.sigmoid(torch.tensor(-lam)).sqrt()
        q = torch.distributions.Normal(a * z, s.expand_as(z))
        ref = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).flatten(1).sum(1)
        torch.testing.assert_close(gaussian_kl_nats(z, None, lam), ref, rtol=1e-5, atol=1e-5)
    lam_e = torch.full_like(z, -2.0)  # learned variance: per-element λ_e
    torch.testing.assert_close(gaussian_kl_nats(z, lam_e, 5.0), gaussian_kl_nats(z, None, -2.0))


def _terms_and_encoder_grad(**switch):
    torch.manual_seed(0)
    model = build_stage1(ULConfig.preset("tiny", **{**TINY_UL, **switch}))
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    terms = model.losses(x, SampleNoise(0, "ul_stage1", 0, range(4), 4))
    (g,) = torch.autograd.grad(terms["total"].sum(), [next(model.encoder.parameters())])
    return terms, g


def test_reading_b_adds_the_rate_and_moves_the_encoder_gradient():
    a_terms, a_grad = _terms_and_encoder_grad(separate_prior=True)
    b_terms, b_grad = _terms_and_encoder_grad(separate_prior=True, separate_prior_rate="gaussian_kl")
    assert "kl" not in a_terms and (b_terms["kl"] > 0).all()
    torch.testing.assert_close(b_terms["total"], a_terms["total"] + b_terms["kl"])
    assert not torch.allclose(a_grad, b_grad)  # the switch reaches the encoder
    with pytest.raises(ValueError, match="separate_prior_rate without separate_prior"):
        ULConfig.preset("tiny", separate_prior_rate="gaussian_kl")
    with pytest.raises(ValueError, match="'none' or 'gaussian_kl'"):
        ULConfig.preset("tiny", separate_prior=True, separate_prior_rate="kl")
