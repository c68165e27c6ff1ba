"""SD-VAE adapter: real SD config (random weights) round trip, offline errors, and the in-suite sd-vae-tiny."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from baselines.diffusers_space import DiffusersSpace
from baselines.sd_vae import load_sd_vae, load_sd_vae_tiny, resolve_sd_vae_dir
from ulbench.protocols import LatentSpace

SD_VAE_FT_MSE_CONFIG = {  # config.json of stabilityai/sd-vae-ft-mse
    "act_fn": "silu", "block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
    "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3,
    "sample_size": 256, "up_block_types": ("UpDecoderBlock2D",) * 4,
}


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("sd-vae-ft-mse")
    AutoencoderKL(**SD_VAE_FT_MSE_CONFIG).save_pretrained(folder, safe_serialization=True)
    return folder


def _images(n=1, size=64, seed=0):
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_sd_config_round_trip_and_normalisation(sd_dir):
    from diffusers import AutoencoderKL

    space = load_sd_vae("sd-vae-ft-mse", path=str(sd_dir))
    assert isinstance(space, LatentSpace)
    x, seeds = _images(), torch.tensor([7])
    z = space.encode(x, seeds)
    assert z.dtype == torch.float32 and z.shape == (1, 4, 8, 8)
    x_hat = space.decode(z, seeds)
    assert x_hat.dtype == torch.uint8 and x_hat.shape == x.shape
    # independent path: raw diffusers calls with the documented scaling (z = z_raw * scaling_factor)
    raw_vae = AutoencoderKL.from_pretrained(str(sd_dir)).eval()
    with torch.no_grad():
        z_raw = raw_vae.encode(x.float() / 127.5 - 1).latent_dist.mean
        ref = ((raw_vae.decode(z_raw).sample.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    assert raw_vae.config.scaling_factor == 0.18215
    torch.testing.assert_close(z, z_raw * 0.18215, rtol=1e-5, atol=1e-6)
    assert (x_hat.int() - ref.int()).abs().max() <= 1
    rec = space.reconstruct(x, seeds)
    assert torch.equal(rec.x_hat, x_hat)
    bits = rec.bits["total"]
    assert bits.dtype == np.float64 and bits.shape == (1,) and bits[0] > 0
    with torch.no_grad():
        kl_nats = raw_vae.encode(x.float() / 127.5 - 1).latent_dist.kl()
    np.testing.assert_allclose(bits, kl_nats.double().numpy() / np.log(2), rtol=1e-5)
    info = space.info()
    assert info.downsample_factor == 8 and info.latent_channels == 4 and info.rate == "kl"
    assert info.details["latent_normalisation"]["scale"] == [pytest.approx(0.18215)] * 4
    params = info.params
    assert params["total"] == sum(p.numel() for p in raw_vae.parameters()) == params["encoder"] + params["decoder"]
    assert list(info.provenance["weights_sha256"]) == ["diffusion_pytorch_model.safetensors"]
    assert len(info.provenance["weights_sha256"]["diffusion_pytorch_model.safetensors"]) == 64
    assert "posterior mean" in info.details["latent"] and "KL" in info.details["bits"]
    # a folder passed as sd-vae-ft-mse:DIR did not come from the hub: no hub id is claimed for it
    assert info.provenance["preset"] == "sd-vae-ft-mse" and "hub_id" not in info.provenance
    assert info.provenance["source"] == str(sd_dir.resolve()) and info.provenance["class"] == "AutoencoderKL"


def test_posterior_sample_depends_only_on_seed(sd_dir):
    space = load_sd_vae("sd-vae-ft-mse", path=str(sd_dir), sample_posterior=True)
    x = _images(2, size=32)
    both = space.encode(x, torch.tensor([1, 2]))
    one = space.encode(x[1:], torch.tensor([2]))
    torch.testing.assert_close(both[1:], one, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(space.encode(x[1:], torch.tensor([3])), one)


def test_bad_inputs(sd_dir):
    space = load_sd_vae("sd-vae-ft-ema", path=str(sd_dir))
    with pytest.raises(ValueError, match="uint8"):
        space.encode(torch.zeros(1, 3, 32, 32), torch.tensor([0]))
    with pytest.raises(ValueError, match="divisible"):
        space.encode(_images(size=36), torch.tensor([0]))
    with pytest.raises(ValueError, match="seed"):
        space.encode(_images(), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="sd-vae-ft-mse"):
        load_sd_vae("sd-vae-ft-xl", path=str(sd_dir))


def test_missing_path_says_how_to_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="hf download stabilityai/sd-vae-ft-mse --local-dir"):
        load_sd_vae("sd-vae-ft-mse", path=str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        resolve_sd_vae_dir("sd-vae-ft-ema", tmp_path / "empty")


def test_hub_id_not_cached_fails_fast(tmp_path):
    """local_files_only: no retries even with the network allowed (HF_HUB_OFFLINE unset)."""
    t0 = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="sd-vae-ft-ema --local-dir DIR"):
        load_sd_vae("sd-vae-ft-ema", cache_dir=str(tmp_path))
    assert time.perf_counter() - t0 < 3


@pytest.mark.parametrize("offline", ["1", None])
def test_hub_id_error_in_fresh_process(tmp_path, offline):
    """With an empty HF_HOME, the registry-style call fails within seconds, with or without HF_HUB_OFFLINE."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["HF_HOME"] = str(tmp_path)
    if offline:
        env["HF_HUB_OFFLINE"] = offline
    code = ("import time\nfrom baselines.sd_vae import load_sd_vae\nimport diffusers, huggingface_hub\n"
            "t0 = time.perf_counter()\ntry:\n    load_sd_vae('sd-vae-ft-mse')\nexcept FileNotFoundError as e:\n"
            "    print('SECONDS', time.perf_counter() - t0)\n    print('ERR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         check=False,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert "ERR" in out.stdout and "hf download stabilityai/sd-vae-ft-mse" in out.stdout, out.stderr
    seconds = float(out.stdout.split("SECONDS")[1].split()[0])
    assert seconds < 3  # imports excluded; diffusers' from_pretrained retries take ~28 s


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from baselines.sd_vae_train import train_sd_vae_tiny

    run = tmp_path_factory.mktemp("tiny")
    meta = train_sd_vae_tiny(str(run), steps=3, batch_size=4, progress=False, warmup_steps=1,
                             metric_images=16)
    return run, meta


def test_tiny_train_save_load(tiny_run):
    run, _ = tiny_run
    assert (run / "diffusion_pytorch_model.safetensors").is_file() and (run / "config.json").is_file()
    assert not list(run.glob(".tmp-*"))
    saved = json.loads((run / "sd_vae_tiny.json").read_text())
    assert saved["train"]["steps"] == 3 and saved["objective"]["lpips_term"].startswith("off")
    assert np.isfinite(saved["metrics"]["eval"]["psnr_db"])
    space = load_sd_vae_tiny(str(run))
    assert isinstance(space, DiffusersSpace)
    info = space.info()
    assert info.latent_shape == (4, 8, 8) and info.downsample_factor == 4
    assert info.provenance["objective"]["lpips_term"].startswith("off")
    np.testing.assert_allclose(info.details["latent_normalisation"]["shift"], saved["latent_stats"]["mean"], rtol=1e-6)
    from baselines.sd_vae_train import latent_stats
    from ulbench.data.embedded import embedded_photos

    images = embedded_photos("train", 32).images[::20]
    stats = latent_stats(space.vae, images)
    space.latent_shift[:] = torch.tensor(stats["mean"]).reshape(1, -1, 1, 1)
    space.latent_scale[:] = 1 / torch.tensor(stats["std"]).reshape(1, -1, 1, 1)
    z = space.encode(images, torch.zeros(len(images), dtype=torch.int64))
    # normalised latents of the measured set: zero mean, unit std per channel (float32 vs float64 stats)
    np.testing.assert_allclose(z.mean((0, 2, 3)).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(z.std((0, 2, 3), correction=0).numpy(), 1, atol=1e-4)
    with pytest.raises(ValueError, match="overwrite"):
        from baselines.sd_vae_train import train_sd_vae_tiny

        train_sd_vae_tiny(str(run), steps=1)


def test_tiny_batch_size_independent(tiny_run):
    run, _ = tiny_run
    from ulbench.data.embedded import embedded_photos

    x = embedded_photos("eval", 32).images[:4]
    seeds = torch.arange(4)
    for sample in (False, True):
        space = load_sd_vae_tiny(str(run), sample_posterior=sample)
        space.micro_batch = 4
        full = space.reconstruct(x, seeds)
        space.micro_batch = 1
        single = space.reconstruct(x, seeds)
        assert (full.x_hat.int() - single.x_hat.int()).abs().max() <= 1
        np.testing.assert_allclose(full.bits["total"], single.bits["total"], rtol=1e-5)
        torch.testing.assert_close(space.encode(x[2:3], seeds[2:3]), space.encode(x, seeds)[2:3], rtol=1e-4, atol=1e-5)


def test_tiny_missing_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_sd_vae_tiny"):
        load_sd_vae_tiny(str(tmp_path))


def test_flop_components_match_diffusers_calls(tiny_run):
    """The FLOP-counting wrappers compute what vae.encode / vae.decode compute, with their own parameters."""
    from ulbench.metrics.flops import FlopReport

    space = load_sd_vae_tiny(str(tiny_run[0]))
    (_, enc, (x,)), (_, dec, (z,)) = space.flop_components()
    x = torch.randn_like(x)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), space.vae.encode(x).latent_dist.parameters)
        torch.testing.assert_close(dec(z), space.vae.decode(z).sample)
    report = FlopReport.from_modules(space.flop_components())
    info = space.info()
    assert [r.params for r in report.rows] == [info.params["encoder"], info.params["decoder"]]
    assert all(r.gmacs_per_sample > 0 for r in report.rows)


def test_compare_dry_run_plans_base_model_and_gfid(sd_dir, tmp_path):
    """`ulbench compare ul sd-vae-ft-mse:DIR pixel --dry-run` on the real SD config (random weights): the given VAE
    gets a base model and gFID (continuous latents), JPEG does not; nothing is written."""
    from click.testing import CliRunner

    from ulbench.cli import main

    out = tmp_path / "cmp"
    res = CliRunner().invoke(main, ["compare", "ul", f"sd-vae-ft-mse:{sd_dir}", "pixel", "jpeg-q10", "--dry-run",
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.output)
    runs = {r["run"]: r for r in plan["runs"]}
    assert list(runs) == ["ul", "sd-vae-ft-mse", "pixel", "jpeg-q10"]
    sd = runs["sd-vae-ft-mse"]
    assert sd["system"] == "sd-vae" and sd["space"] == f"sd-vae-ft-mse:{sd_dir}" and sd["base"] == {"steps": 600}
    assert sd["stage2"]["base_model"] is True and sd["stage2"]["gfid"] == "run"
    assert all(runs[n]["stage2"]["base_model"] for n in ("ul", "pixel"))
    assert runs["jpeg-q10"]["stage2"] == {"base_model": False, "gfid": "skipped",
                                          "why": "jpeg-q10 has no continuous latents for a base model"}
    assert not out.exists()
    bad = CliRunner().invoke(main, ["compare", "ul", f"sd-vae-ft-mse:{tmp_path / 'nope'}", "--dry-run"])
    assert bad.exit_code == 2 and "hf download stabilityai/sd-vae-ft-mse" in bad.output
