"""Training and sampling FLOPs of each system, counted with fvcore (UL-SPEC §8: 1 multiply-add = 1 FLOP)."""

from __future__ import annotations

from typing import Any

import torch

from ulbench.metrics.flops import CONVENTION, count_forward_macs


class _Call(torch.nn.Module):
    """Wrap a denoiser so fvcore traces it with tensor-only inputs (no None arguments)."""

    def __init__(self, net: torch.nn.Module, with_cond: bool = False, with_labels: bool = False):
        super().__init__()
        self.net, self.with_cond, self.with_labels = net, with_cond, with_labels

    def forward(self, z: torch.Tensor, lam: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        cond = rest[0] if self.with_cond else None
        labels = rest[-1] if self.with_labels else None
        return self.net(z, lam, cond, labels)


def space_components(space: Any, resolution: int | None = None) -> dict[str, tuple[torch.nn.Module, tuple]]:
    """The networks a space declares through `flop_components` (ulbench/spaces.py), by short name; {} without."""
    if not callable(getattr(space, "flop_components", None)):
        return {}
    return {name.split("/")[-1]: (module, inputs) for name, module, inputs in space.flop_components(resolution)}


def ul_model_components(model: Any, cfg: Any) -> dict[str, tuple[torch.nn.Module, tuple]]:
    """Encoder, prior and decoder of a UnifiedLatents model with one-image example inputs."""
    d, f, c = cfg.resolution, model.downsample_factor, model.latent_channels
    x, lam, z = torch.zeros(1, 3, d, d), torch.zeros(1), torch.zeros(1, c, d // f, d // f)
    prior_lam = torch.zeros(1, c, d // f, d // f) if cfg.learned_variance else lam
    cond = torch.zeros(1, model.decoder.cond_channels, d, d)
    return {"encoder": (model.encoder, (x,)), "prior": (_Call(model.prior), (z, prior_lam)),
            "decoder": (_Call(model.decoder, with_cond=True), (x, lam, cond))}


def base_components(generator: Any) -> dict[str, tuple[torch.nn.Module, tuple]]:
    """The base model (or the prior, for single-stage generation) with one-sample inputs."""
    if hasattr(generator, "net"):
        shape = tuple(generator.meta["data_shape"])
        labelled = bool(generator.meta["num_classes"])
        inputs = (torch.zeros(1, *shape), torch.zeros(1)) + ((torch.zeros(1, dtype=torch.long),) if labelled else ())
        return {"base": (_Call(generator.net, with_labels=labelled), inputs)}
    return {}


def macs_per_sample(components: dict[str, tuple[torch.nn.Module, tuple]]) -> dict[str, int]:
    """Forward MACs per sample of each component."""
    return {name: count_forward_macs(module, inputs) for name, (module, inputs) in components.items()}


def cost_summary(stage1_macs: dict[str, int], stage1_samples: int, base_macs: dict[str, int], base_samples: int,
                 encode_images: int = 0, sample_macs: float = 0.0) -> dict[str, Any]:
    """Training FLOPs = 3 × forward × samples seen per component (+ one forward per image for latent caching)."""
    train = {f"stage1/{k}": 3 * v * stage1_samples for k, v in stage1_macs.items()}
    train.update({f"base/{k}": 3 * v * base_samples for k, v in base_macs.items()})
    if encode_images and "encoder" in stage1_macs:
        train["base/encode-train-set"] = stage1_macs["encoder"] * encode_images
    total = float(sum(train.values()))
    return {"train_macs": total, "train_flops_2x": 2 * total, "train_breakdown_macs": train,
            "forward_macs_per_sample": {**stage1_macs, **{f"base/{k}": v for k, v in base_macs.items()}},
            "sample_macs": float(sample_macs), "convention": CONVENTION}
