"""`ulbench flops`: parameters and forward cost per sample of each component, at any scale, on CPU."""

from __future__ import annotations

import warnings

import torch

from ulbench.metrics.flops import FlopReport, FlopRow, count_forward_macs, count_params

# Base-model widths per scale [ours]: the tiny one is what the suites train; larger ones are for counting.
BASE_CHANNELS = {"tiny": (48, 96), "small": (128, 256, 256), "paper": (256, 512, 768, 768)}


def _ul_rows(scale: str) -> list[FlopRow]:
    from ul_models.config import ULConfig
    from ul_models.model import build_stage1
    from ulbench.costs import ul_model_components

    cfg = ULConfig.preset(scale)
    model = build_stage1(cfg)
    rows = [FlopRow(f"ul/{name}", count_params(m), count_forward_macs(m, inp) / 1e9)
            for name, (m, inp) in ul_model_components(model, cfg).items()]
    rows.append(_base_row(f"ul/base on {cfg.latent_channels}x{cfg.resolution // cfg.downsample_factor}^2 latents",
                          cfg.latent_channels, cfg.resolution // cfg.downsample_factor, scale, pixels=False))
    return rows


def _base_row(name: str, channels: int, side: int, scale: str, pixels: bool) -> FlopRow:
    from ul_models.nets import Denoiser
    from ulbench.costs import _Call

    net = Denoiser(channels, BASE_CHANNELS[scale], 1, emb_dim=64, num_classes=1000 if scale == "paper" else 9,
                   prediction="v" if pixels else "eps", patch_size=2 if pixels else 1)
    inputs = (torch.zeros(1, channels, side, side), torch.zeros(1), torch.zeros(1, dtype=torch.long))
    return FlopRow(name, count_params(net), count_forward_macs(_Call(net, with_labels=True), inputs) / 1e9)


def _sd_vae_rows(scale: str) -> list[FlopRow]:
    from diffusers import AutoencoderKL

    from baselines.sd_vae_train import tiny_autoencoder_kl

    res = {"tiny": 32, "small": 128, "paper": 512}[scale]
    if scale == "tiny":
        vae = tiny_autoencoder_kl()
    else:
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            sample_size=res)
    from baselines.diffusers_space import DiffusersSpace

    space = DiffusersSpace(vae, "sd-vae", source="random init", weights={}, resolution=res)
    f, params = space.downsample_factor, space.info().params
    rows = [FlopRow(f"sd-vae/{part} @{res}px", params[part], count_forward_macs(module, inputs) / 1e9)
            for (_, module, inputs), part in zip(space.flop_components(), ("encoder", "decoder"))]
    rows.append(_base_row(f"sd-vae/base on 4x{res // f}^2 latents", 4, res // f, scale, pixels=False))
    return rows


def flops_table(spaces: list[str], scale: str) -> str:
    """Markdown table of parameters and GMACs / GFLOPs (2×MAC) per sample for the named systems."""
    if scale not in BASE_CHANNELS:
        raise ValueError(f"scale must be one of {tuple(BASE_CHANNELS)}, got {scale!r}")
    rows: list[FlopRow] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for s in spaces:
            if s == "ul":
                rows += _ul_rows(scale)
            elif s == "sd-vae":
                rows += _sd_vae_rows(scale)
            elif s == "pixel":
                res = {"tiny": 32, "small": 128, "paper": 512}[scale]
                rows.append(_base_row(f"pixel/base on 3x{res}^2 pixels", 3, res, scale, pixels=True))
            else:
                raise ValueError(f"flops knows ul, sd-vae and pixel; got {s!r}")
    return FlopReport(rows, title=f"Forward cost per sample, scale {scale}").to_markdown()
