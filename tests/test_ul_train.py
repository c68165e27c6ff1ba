"""Stage-1 training: logs, safetensors checkpoints, NaN handling, ablation switches, the ULSpace adapter."""

import json

import numpy as np
import pytest
import torch

import ul_models.train as train_mod
from tests.conftest import TINY_UL as TINY  # noqa: E402
from tests.conftest import checkpoint_tensors  # noqa: E402
from ul_models.config import ULConfig
from ul_models.model import UnifiedLatents
from ul_models.space import load_ul_space
from ul_models.train import load_checkpoint, train_stage1

_tensors = checkpoint_tensors


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ul") / "run"
    summary = train_stage1(ULConfig.preset("tiny", **TINY), run_dir, progress=False)
    return run_dir, summary


def test_run_writes_config_log_and_safetensors(trained):
    run_dir, summary = trained
    assert summary["steps"] == 8 and summary["run_dir"] == str(run_dir) and summary["bits_per_pixel"] > 0
    assert {"psnr_db", "wall_time_s", "bits_per_latent_dim", "collapsed"} <= summary.keys()
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 9))
    for term in ("total", "prior", "prior_diffusion", "prior_kl_end", "dec", "dec_elbo", "bits_per_pixel"):
        assert all(np.isfinite(r[term]) for r in records)
    evals = [r for r in records if "eval_bits_per_pixel" in r]
    assert [r["step"] for r in evals] == [4, 8] and all("eval_psnr_db" in r for r in evals)
    cfg = ULConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    state = json.loads((run_dir / "checkpoint.json").read_text())
    assert state["step"] == 8 and state["config_hash"] == cfg.config_hash() and "data_order" in state
    keys = _tensors(run_dir).keys()
    assert any(k.startswith("ema.") for k in keys) and any(k.startswith("optim.") for k in keys)
    assert not list(run_dir.glob("*.tmp"))


def test_non_finite_loss_stops_with_clear_error_and_keeps_checkpoint(tmp_path, monkeypatch):
    original = UnifiedLatents.losses
    calls = {"n": 0}

    def poisoned(self, x, noise):
        terms = original(self, x, noise)
        calls["n"] += 1
        if calls["n"] == 5:  # step index 4
            terms["prior"] = terms["prior"] * float("nan")
        return terms

    monkeypatch.setattr(UnifiedLatents, "losses", poisoned)
    run_dir = tmp_path / "nan"
    with pytest.raises(RuntimeError, match=r"step 4: term 'prior'") as err:
        train_stage1(ULConfig.preset("tiny", **TINY), run_dir, progress=False)
    assert "step 3" in str(err.value)
    state = load_checkpoint(run_dir)
    assert state["step"] == 3
    assert all(torch.isfinite(t).all() for t in _tensors(run_dir).values() if t.is_floating_point())


def test_collapse_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "COLLAPSE_BPP", 1e9)  # pretend every rate is a collapse
    with pytest.warns(UserWarning, match="collapsed"):
        summary = train_stage1(ULConfig.preset("tiny", **{**TINY, "steps": 2}), tmp_path / "c", progress=False)
    assert summary["collapsed"] is True
    assert "collapse_warning" in (tmp_path / "c" / "log.jsonl").read_text()


def test_existing_run_requires_resume(trained):
    run_dir, _ = trained
    with pytest.raises(ValueError, match="resume=True"):
        train_stage1(ULConfig.preset("tiny", **TINY), run_dir, progress=False)


def test_space_protocol_and_batch_size_invariance(trained):
    from ulbench.data import load_dataset
    from ulbench.protocols import LatentSpace

    run_dir, _ = trained
    space = load_ul_space(str(run_dir), bits_draws=8)
    assert isinstance(space, LatentSpace)
    x, _ = load_dataset("embedded", split="eval", resolution=16).get(np.arange(5))
    seeds = torch.arange(100, 105)
    full = space.reconstruct(x, seeds)
    assert full.x_hat.dtype == torch.uint8 and full.x_hat.shape == x.shape
    assert full.bits["total"].dtype == np.float64 and (full.bits_stderr["total"] > 0).all()
    for lo, hi in ((0, 1), (1, 4), (4, 5)):
        part = space.reconstruct(x[lo:hi], seeds[lo:hi])
        assert torch.equal(part.x_hat, full.x_hat[lo:hi])
        assert np.array_equal(part.bits["total"], full.bits["total"][lo:hi])
    z = space.encode(x, seeds)
    assert z.shape == (5, 4, 4, 4) and torch.equal(space.encode(x[2:3], seeds[2:3]), z[2:3])
    assert torch.equal(space.decode(z, seeds), full.x_hat)
    info = space.info()
    assert info.latent_shape == (4, 4, 4) and info.downsample_factor == 4 and info.details["bits_draws"] == 8
    assert info.provenance["config_hash"] == ULConfig.preset("tiny", **TINY).config_hash()
    assert info.rate == "ul_bound" and info.stochastic_decoder and info.decoder_evals == space.decode_steps
    with pytest.raises(ValueError, match="uint8"):
        space.encode(x.float(), seeds)


def test_registry_entry_loads_the_space(trained):
    from ulbench.registry import SPACES

    run_dir, _ = trained
    space = SPACES.build(f"ul:{run_dir}", steps=2, bits_draws=4)
    assert space.info().decoder_evals == 2


@pytest.mark.parametrize(
    "switch",
    [{"separate_prior": True}, {"learned_variance": True}, {"lambda0": 0.0}, {"data": "embedded-textures"}],
)
def test_ablation_switches_train(tmp_path, switch):
    cfg = ULConfig.preset("tiny", **{**TINY, "steps": 2, "eval_every": 2, **switch})
    summary = train_stage1(cfg, tmp_path / "a", progress=False)
    assert np.isfinite(summary["bits_per_pixel"]) and np.isfinite(summary["psnr_db"])
    if switch.get("learned_variance"):
        space = load_ul_space(str(tmp_path / "a"), bits_draws=4)
        x = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
        z = space.encode(x, torch.arange(2))
        assert z.shape == (2, 8, 4, 4) and (z[:, 4:] <= cfg.lambda0).all()
        assert space.decode(z, torch.arange(2)).shape == x.shape


def test_non_finite_gradient_stops_before_the_update(tmp_path, monkeypatch):
    original = torch.nn.utils.clip_grad_norm_
    calls = {"n": 0}

    def poisoned(params, max_norm):
        calls["n"] += 1
        norm = original(params, max_norm)
        return norm * float("nan") if calls["n"] == 4 else norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", poisoned)
    with pytest.raises(RuntimeError, match=r"step 3: term 'grad_norm'"):
        train_stage1(ULConfig.preset("tiny", **TINY), tmp_path / "g", progress=False)
    assert load_checkpoint(tmp_path / "g")["step"] == 3
