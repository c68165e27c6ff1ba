"""Every trainer's objective at toy size with in-memory data, for the training-loop tests (meta, bf16, DDP, resume)."""

from __future__ import annotations

from typing import Any

import torch

from ul_models.training.data import TensorBatches
from ul_models.training.loop import LoopConfig

N = 16  # training examples of every toy data set
NAMES = ("ul", "base", "bound", "video", "sd_vae")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def toy(name: str, steps: int = 4, batch_size: int = 8, checkpoint_every: int = 2) -> tuple[Any, LoopConfig, Any]:
    """(objective, loop config, data) of one trainer; the data are fixed random tensors."""
    cfg = LoopConfig(steps=steps, batch_size=batch_size, lr=2e-3, warmup_steps=2, checkpoint_every=checkpoint_every)
    images = torch.randint(0, 256, (N, 3, 16, 16), generator=_gen(1), dtype=torch.uint8)
    labels = torch.randint(0, 3, (N,), generator=_gen(2))
    if name == "ul":
        from tests.conftest import TINY_UL
        from ul_models.config import ULConfig
        from ul_models.train import Stage1Objective

        return Stage1Objective(ULConfig.preset("tiny", **TINY_UL)), cfg, TensorBatches(x=images)
    if name == "base":
        from ul_models.base import BaseConfig, BaseObjective

        base = BaseConfig(space="pixel", channels=(8, 16), emb_dim=16)
        z = torch.randn(N, 4, 4, 4, generator=_gen(3))
        return BaseObjective(base, (4, 4, 4), 3, 5.0), cfg, TensorBatches(z=z, label=labels)
    if name == "bound":
        from ul_models.latent_bound import BoundConfig, BoundObjective

        z = torch.randn(N, 2, 4, 4, generator=_gen(4))
        return BoundObjective(BoundConfig(channels=(8,), emb_dim=8), (2, 4, 4)), cfg, TensorBatches(z=z)
    if name == "video":
        from ul_models.video import VideoBaseConfig, VideoBaseObjective

        vcfg = VideoBaseConfig(num_frames=4, context_frames=2, channels=(8, 16), emb_dim=16)
        future, context = torch.randn(N, 8, 4, 4, generator=_gen(5)), torch.randn(N, 8, 4, 4, generator=_gen(6))
        return (VideoBaseObjective(vcfg, (4, 4, 4), 3, 5.0, pixels=False), cfg,
                TensorBatches(future=future, context=context, label=labels))
    if name == "sd_vae":
        from baselines.sd_vae_train import TINY_CONFIG, KLVAEObjective

        config = {**TINY_CONFIG, "sample_size": 16, "block_out_channels": (8, 16), "norm_num_groups": 4,
                  "down_block_types": ("DownEncoderBlock2D",) * 2, "up_block_types": ("UpDecoderBlock2D",) * 2}
        return KLVAEObjective(config, 1e-6), cfg, TensorBatches(x=images)
    raise KeyError(name)
