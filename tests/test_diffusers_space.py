"""`diffusers:DIR`: every supported autoencoder class, random-initialised from a small config, saved and loaded back
through the registry, checked against the raw diffusers model transformed by hand (no hub access anywhere)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil

import numpy as np
import pytest
import torch

from ulbench.registry import SPACES

KL = {"block_out_channels": (8, 16), "down_block_types": ("DownEncoderBlock2D",) * 2, "layers_per_block": 1,
      "up_block_types": ("UpDecoderBlock2D",) * 2, "norm_num_groups": 4, "latent_channels": 4, "sample_size": 16}
CONFIGS = {  # name: (class, config, downsampling factor, latent channels)
    "sd": ("AutoencoderKL", {**KL, "scaling_factor": 0.18215}, 2, 4),
    "sdxl": ("AutoencoderKL", {**KL, "scaling_factor": 0.13025}, 2, 4),
    "flux": ("AutoencoderKL", {**KL, "block_out_channels": (8, 16, 16), "down_block_types": ("DownEncoderBlock2D",) * 3,
                               "up_block_types": ("UpDecoderBlock2D",) * 3, "latent_channels": 16,
                               "scaling_factor": 0.3611, "shift_factor": 0.1159, "use_quant_conv": False,
                               "use_post_quant_conv": False}, 4, 16),
    "kl-mean-std": ("AutoencoderKL", {**KL, "scaling_factor": 0.5, "latents_mean": (0.1, -0.2, 0.3, 0.0),
                                      "latents_std": (2.0, 1.0, 0.5, 4.0)}, 2, 4),
    "dc": ("AutoencoderDC", {"latent_channels": 8, "attention_head_dim": 8, "encoder_block_types": "ResBlock",
                             "decoder_block_types": "ResBlock", "encoder_block_out_channels": (8, 16),
                             "decoder_block_out_channels": (8, 16), "encoder_layers_per_block": (1, 1),
                             "decoder_layers_per_block": (1, 1), "encoder_qkv_multiscales": ((), ()),
                             "decoder_qkv_multiscales": ((), ()), "scaling_factor": 0.41407}, 2, 8),
    "tiny": ("AutoencoderTiny", {"encoder_block_out_channels": (8, 8, 8), "decoder_block_out_channels": (8, 8, 8),
                                 "num_encoder_blocks": (1, 1, 1), "num_decoder_blocks": (1, 1, 1), "latent_channels": 4,
                                 "scaling_factor": 0.5, "shift_factor": 0.1}, 4, 4),
    "vq": ("VQModel", {**KL, "latent_channels": 3, "num_vq_embeddings": 32, "vq_embed_dim": 3,
                       "scaling_factor": 0.5}, 2, 3),
}


def _save(folder, cls_name, config, seed=0):
    import diffusers

    torch.manual_seed(seed)
    getattr(diffusers, cls_name)(**config).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return {k: _save(tmp_path_factory.mktemp(k), cls, cfg) for k, (cls, cfg, _, _) in CONFIGS.items()}


def _images(n=2, size=16, seed=0):
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _raw(folder, cls_name):
    import diffusers

    return getattr(diffusers, cls_name).from_pretrained(str(folder)).eval()


def _raw_latent(vae, x):
    """The raw model's public encode output (KL: posterior mean; VQ: pre-quantisation latent)."""
    out = vae.encode(x.float() / 127.5 - 1)
    for attr in ("latent_dist", "latent", "latents"):
        if hasattr(out, attr):
            value = getattr(out, attr)
            return value.mean if attr == "latent_dist" else value
    raise AssertionError(out)


def _by_hand(config, z_raw):
    """z = (z_raw − shift) · scale written out from the config (SDXL pipelines for latents_mean / latents_std)."""
    scale = config.get("scaling_factor") or 1.0
    if config.get("latents_mean") is not None:
        mean = torch.tensor(config["latents_mean"]).view(1, -1, 1, 1)
        std = torch.tensor(config["latents_std"]).view(1, -1, 1, 1)
        return (z_raw - mean) * scale / std
    return (z_raw - (config.get("shift_factor") or 0.0)) * scale


@pytest.mark.parametrize("key", list(CONFIGS))
def test_class_through_registry_matches_raw_model(folders, key):
    cls_name, config, f, c = CONFIGS[key]
    space = SPACES.build(f"diffusers:{folders[key]}", resolution=16)
    x, seeds = _images(), torch.tensor([3, 4])
    z = space.encode(x, seeds)
    assert z.dtype == torch.float32 and z.shape == (2, c, 16 // f, 16 // f)
    raw = _raw(folders[key], cls_name)
    with torch.no_grad():
        z_raw = _raw_latent(raw, x)
        ref = ((raw.decode(z_raw).sample.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    expected = _by_hand(config, z_raw)
    torch.testing.assert_close(z, expected, rtol=1e-5, atol=1e-5)
    if config.get("scaling_factor", 1.0) != 1.0:
        assert not torch.allclose(z, z_raw, atol=1e-3)  # the normalisation was really applied
    x_hat = space.decode(z, seeds)
    assert x_hat.dtype == torch.uint8 and x_hat.shape == x.shape
    assert (x_hat.int() - ref.int()).abs().max() <= 1  # decode(encode) = the raw model's decode of its latents
    rec = space.reconstruct(x, seeds)
    assert torch.equal(rec.x_hat, x_hat) and torch.allclose(rec.z, z)

    info = space.info()
    assert (info.latent_channels, info.downsample_factor, info.latent_shape) == (c, f, (c, 16 // f, 16 // f))
    assert info.stochastic_decoder is False and info.decoder_evals == 1
    assert info.params["total"] == sum(p.numel() for p in raw.parameters())
    assert info.params["encoder"] + info.params["decoder"] == info.params["total"] and info.params["encoder"] > 0
    prov = info.provenance
    weights = folders[key] / "diffusion_pytorch_model.safetensors"
    assert prov["class"] == cls_name and len(prov["config_hash"]) == 12
    assert prov["weights_sha256"] == {weights.name: hashlib.sha256(weights.read_bytes()).hexdigest()}
    assert prov["source"] == str(folders[key].resolve()) and not any(k.startswith("hub") for k in prov)
    assert info.details["latent_normalisation"]["formula"] == "z = (z_raw - shift) * scale"

    if cls_name == "AutoencoderKL":
        assert info.rate == "kl" and "KL" in info.details["bits"]
        with torch.no_grad():
            kl_nats = raw.encode(x.float() / 127.5 - 1).latent_dist.kl()
        np.testing.assert_allclose(rec.bits["total"], kl_nats.double().numpy() / math.log(2), rtol=1e-5)
    elif cls_name == "VQModel":
        assert info.rate == "codebook_upper_bound" and "upper bound" in info.details["bits"]
        tokens = (16 // f) ** 2
        assert rec.bits["total"].dtype == np.float64
        np.testing.assert_array_equal(rec.bits["total"], np.full(2, tokens * math.log2(32)))
        assert "pre-quantisation" in info.details["latent"]
    else:
        assert info.rate is None and rec.bits is None and "UL bound" in info.details["bits"]


def test_hand_constants_are_the_configs(folders):
    """The hand transform above uses the documented constants, not something the adapter computed."""
    space = SPACES.build(f"diffusers:{folders['sd']}")
    assert space.info().details["latent_normalisation"]["scale"] == [pytest.approx(0.18215)] * 4
    flux = SPACES.build(f"diffusers:{folders['flux']}").info().details["latent_normalisation"]
    assert flux["shift"] == [pytest.approx(0.1159)] * 16 and flux["scale"] == [pytest.approx(0.3611)] * 16
    tiny = SPACES.build(f"diffusers:{folders['tiny']}").info()
    assert tiny.details["taesd_byte_packing"] == {"latent_magnitude": 3, "latent_shift": 0.5, "applied": False}


@pytest.mark.parametrize("key", ["sd", "dc", "tiny", "vq"])
def test_batch_size_invariance(folders, key):
    space = SPACES.build(f"diffusers:{folders[key]}")
    x, seeds = _images(5, seed=1), torch.arange(5)
    space.micro_batch = 4
    full = space.reconstruct(x, seeds)
    space.micro_batch = 1
    single = space.reconstruct(x, seeds)
    torch.testing.assert_close(full.z, single.z, rtol=1e-4, atol=1e-5)
    assert (full.x_hat.int() - single.x_hat.int()).abs().max() <= 1
    torch.testing.assert_close(space.encode(x[2:3], seeds[2:3]), full.z[2:3], rtol=1e-4, atol=1e-5)
    if full.bits is not None:
        np.testing.assert_allclose(full.bits["total"], single.bits["total"], rtol=1e-5)


@pytest.mark.parametrize("key", ["flux", "dc", "tiny", "vq"])
def test_flop_components_are_traceable_and_compute_the_space(folders, key):
    from ulbench.metrics.flops import FlopReport

    space = SPACES.build(f"diffusers:{folders[key]}")
    (_, enc, (x,)), (_, dec, (z,)) = space.flop_components(16)
    assert x.shape == (1, 3, 16, 16) and z.shape == (1, space.latent_channels, 16 // space.downsample_factor,
                                                     16 // space.downsample_factor)
    raw = _raw(folders[key], CONFIGS[key][0])
    x = torch.rand_like(x) * 2 - 1
    with torch.no_grad():
        z_raw = _raw_latent(raw, (x + 1) * 127.5)
        torch.testing.assert_close(enc(x)[:, : z_raw.shape[1]], z_raw, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(dec(z_raw), raw.decode(z_raw).sample, rtol=1e-4, atol=1e-5)
    report = FlopReport.from_modules(space.flop_components(16))
    info = space.info()
    assert [r.params for r in report.rows] == [info.params["encoder"], info.params["decoder"]]
    assert all(r.gmacs_per_sample > 0 for r in report.rows)


def test_folder_errors_name_the_folder_and_the_classes(tmp_path, folders):
    classes = "AutoencoderKL, AutoencoderDC, AutoencoderTiny, VQModel"
    with pytest.raises(FileNotFoundError, match="is not a directory") as e:
        SPACES.build(f"diffusers:{tmp_path / 'nope'}")
    assert str(tmp_path / "nope") in str(e.value) and classes in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json") as e:
        SPACES.build(f"diffusers:{tmp_path / 'empty'}")
    assert classes in str(e.value)
    (tmp_path / "noweights").mkdir()
    shutil.copy(folders["sd"] / "config.json", tmp_path / "noweights" / "config.json")
    (tmp_path / "noweights" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(FileNotFoundError, match="no diffusion_pytorch_model.safetensors") as e:
        SPACES.build(f"diffusers:{tmp_path / 'noweights'}")
    assert "noweights" in str(e.value) and classes in str(e.value)
    unet = tmp_path / "unet"
    unet.mkdir()
    (unet / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(ValueError, match="holds a UNet2DModel") as e:
        SPACES.build(f"diffusers:{unet}")
    assert str(unet) in str(e.value) and classes in str(e.value)
    with pytest.raises(ValueError, match="sample_posterior needs a posterior"):
        from baselines.diffusers_space import load_diffusers_space

        load_diffusers_space(str(folders["dc"]), sample_posterior=True)


def test_pipeline_folder_uses_its_vae(tmp_path, folders):
    pipe = tmp_path / "pipe"
    (pipe / "unet").mkdir(parents=True)
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    shutil.copytree(folders["sdxl"], pipe / "vae")
    space = SPACES.build(f"diffusers:{pipe}")
    assert space.info().provenance["source"] == str((pipe / "vae").resolve())
    assert space.info().details["latent_normalisation"]["scale"] == [pytest.approx(0.13025)] * 4


def test_hub_id_only_from_a_cache_snapshot(tmp_path, folders):
    """A hub id is recorded when the weights are the HF-cache snapshot of that repo, and only then."""
    from baselines.sd_vae import load_sd_vae

    cache = tmp_path / "hub"
    repo = cache / "models--stabilityai--sd-vae-ft-mse"
    shutil.copytree(folders["sd"], repo / "snapshots" / "0123abc")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    prov = load_sd_vae("sd-vae-ft-mse", cache_dir=str(cache)).info().provenance
    assert prov["hub_id"] == "stabilityai/sd-vae-ft-mse" and prov["hub_revision"] == "0123abc"
    assert prov["preset"] == "sd-vae-ft-mse"
    elsewhere = load_sd_vae("sd-vae-ft-mse", path=str(folders["sd"])).info().provenance
    assert "hub_id" not in elsewhere and elsewhere["preset"] == "sd-vae-ft-mse"
    via_adapter = SPACES.build(f"diffusers:{repo / 'snapshots' / '0123abc'}").info().provenance
    assert via_adapter["hub_id"] == "stabilityai/sd-vae-ft-mse"
