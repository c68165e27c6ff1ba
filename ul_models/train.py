"""Stage-1 training of Unified Latents: encoder, prior and decoder jointly (UL-SPEC §5), on the one loop.

The objective is L_stage1 = L_prior + c_lf·L_dec per image, optimised in nats per subpixel so the gradient
scale (and clip) does not depend on resolution. Everything else (device, precision, DDP, accumulation, AdamW,
EMA, guards, checkpoints, exact resume, logs) is `ul_models.training.loop`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ul_models.checkpoint import atomic_write, read_checkpoint
from ul_models.config import ULConfig
from ul_models.losses import bits_per_latent_dim, bits_per_pixel, mix_seed
from ul_models.model import UnifiedLatents, build_stage1
from ul_models.training.data import ImageBatches, batch_indices  # noqa: F401  (batch_indices: public here)
from ul_models.training.loop import Loop, LoopConfig
from ul_models.training.noise import SampleNoise
from ulbench.device import Execution

CHECKPOINT = "checkpoint.safetensors"  # model, EMA, optimizer; JSON state in the metadata
STATE_JSON = "checkpoint.json"  # readable copy of the checkpoint state (written by the loop)
COLLAPSE_BPP = 0.005  # below this the latent carries (almost) nothing: warn (UL-SPEC §5)
RESUMABLE = ("steps", "eval_every", "checkpoint_every", "num_threads", "eval_images", "eval_draws", "decode_steps")
LOSS_TERMS = ("total", "prior", "prior_diffusion", "prior_kl_end", "dec", "dec_elbo")
OPTIONAL_TERMS = ("kl",)  # the Gaussian rate of separate_prior_rate="gaussian_kl"


def to_unit(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float [−1, 1]."""
    return x_uint8.float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor, source: str = "UL decoder") -> torch.Tensor:
    """float [−1, 1] → uint8 [0, 255] (round half up, clamp); NaN/inf is NonFiniteOutput naming `source`, never
    cast to plausible pixels (ulbench.protocols.require_finite)."""
    from ulbench.protocols import require_finite

    x = require_finite(x, source)
    return ((x.float().clamp(-1, 1) + 1.0) * 127.5 + 0.5).floor().clamp(0, 255).to(torch.uint8)


def psnr_db(x_uint8: torch.Tensor, y_uint8: torch.Tensor) -> np.ndarray:
    """Per-image PSNR in dB of uint8 images (peak 255)."""
    mse = (x_uint8.double() - y_uint8.double()).square().flatten(1).mean(1)
    return (10.0 * torch.log10(255.0**2 / mse.clamp_min(1e-10))).cpu().numpy()


class Stage1Objective:
    """UL stage 1 as a loop objective: random flips, then `UnifiedLatents.losses` (UL-SPEC §5)."""

    stream, name = "ul_stage1", "UL stage 1"

    def __init__(self, cfg: ULConfig):
        self.cfg = cfg

    def build(self) -> UnifiedLatents:
        """Encoder, prior and decoder (tiny ≈ 0.5M parameters)."""
        return build_stage1(self.cfg)

    def loss(self, model: UnifiedLatents, batch: dict[str, torch.Tensor], noise: SampleNoise) -> dict:
        """Per-image terms (nats) and the optimised `loss` = total / subpixels."""
        x = to_unit(batch["x"])
        if self.cfg.hflip:
            flip = noise.rand() < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        x = x.contiguous(memory_format=torch.channels_last)
        terms = model.losses(x, noise)
        out = {k: terms[k] for k in LOSS_TERMS + tuple(k for k in OPTIONAL_TERMS if k in terms)}
        out["bits_per_pixel"] = bits_per_pixel(terms["prior"], *x.shape[-2:])
        out["loss"] = terms["total"] / x[0].numel()
        return out


def loop_config(cfg: ULConfig) -> LoopConfig:
    """The loop settings of a stage-1 config."""
    return LoopConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                      weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip, ema=cfg.ema, seed=cfg.seed,
                      checkpoint_every=cfg.checkpoint_every, eval_every=cfg.eval_every, log_every=1,
                      num_threads=cfg.num_threads, channels_last=True,
                      extra={k: v for k, v in cfg.to_dict().items() if k not in RESUMABLE})


@torch.no_grad()
def evaluate(model: UnifiedLatents, data, cfg: ULConfig) -> dict[str, float]:
    """bpp (prior bound, `eval_draws` draws) with standard error and PSNR of sampled reconstructions."""
    n = min(cfg.eval_images, len(data))
    indices = np.arange(n)
    x_uint8, _ = data.get(indices)
    device = next(model.parameters()).device
    seeds = torch.as_tensor(indices)
    model.eval()
    z_clean, logsnr_e = model.encode_batched(to_unit(x_uint8.to(device)))
    gen = torch.Generator().manual_seed(mix_seed(cfg.seed, -1))
    z0 = model.noisy_latent(z_clean, logsnr_e, torch.randn(z_clean.shape, generator=gen).to(device))
    nats, _ = model.prior_nats(z_clean, logsnr_e, seeds, cfg.eval_draws)
    x_hat = to_uint8(model.decode(z0, logsnr_e, seeds, cfg.decode_steps)).cpu()
    h, w = x_uint8.shape[-2:]
    return {
        "eval_bits_per_pixel": float(bits_per_pixel(nats.mean(), h, w)),
        "eval_bits_per_pixel_stderr": float(bits_per_pixel(nats.std(ddof=1) / math.sqrt(n), h, w)) if n > 1 else 0.0,
        "eval_bits_per_latent_dim": float(bits_per_latent_dim(nats.mean(), z_clean[0].numel())),
        "eval_psnr_db": float(psnr_db(x_uint8, x_hat).mean()),
        "eval_latent_std": float(z_clean.std()),
        "eval_images": n,
    }


def load_checkpoint(run_dir: Path, model: UnifiedLatents | None = None, ema: UnifiedLatents | None = None,
                    opt: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """Restore what is given (model, EMA, optimizer) from `run_dir`; returns the JSON state."""
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        raise ValueError(f"No checkpoint at {path}; train first (`train_stage1`) or check the run directory.")
    return read_checkpoint(path, {"model": model, "ema": ema}, opt)[0]


def train_stage1(cfg: ULConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
                 execution: Execution | None = None) -> dict[str, Any]:
    """Train encoder, prior and decoder on L_prior + c_lf·L_dec (UL-SPEC §5); returns a summary dict."""
    from ulbench import dist
    from ulbench.data import load_dataset

    run_dir = Path(run_dir)
    rank, _ = dist.world()
    with dist.rank_zero_first():
        run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "config.json"
    if resume and config_path.exists():
        saved = ULConfig.from_dict(json.loads(config_path.read_text()))
        if dataclasses.replace(saved, steps=cfg.steps).config_hash() != cfg.config_hash():
            raise ValueError(f"resume: {config_path} has config hash {saved.config_hash()}, this run "
                             f"{cfg.config_hash()} (only `steps` may change on resume); resume with the saved "
                             "config or use a new run_dir.")
    elif not resume and (run_dir / CHECKPOINT).exists():
        raise ValueError(f"{run_dir} already holds a checkpoint; pass resume=True to continue or pick a new run_dir.")
    if rank == 0:
        atomic_write(config_path, lambda p: p.write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True)))
    data = load_dataset(cfg.data, split="train", resolution=cfg.resolution)
    try:
        eval_data = load_dataset(cfg.data, split="eval", resolution=cfg.resolution)
    except (ValueError, FileNotFoundError):
        eval_data = data
    loop = Loop(Stage1Objective(cfg), loop_config(cfg), execution, checkpoint=run_dir / CHECKPOINT,
                log=run_dir / "log.jsonl", net_key="model", meta={"config_hash": cfg.config_hash()},
                state_json=run_dir / STATE_JSON)
    summary = loop.run(ImageBatches(data), resume=resume, progress=progress,
                       evaluate=lambda ema: evaluate(ema, eval_data, cfg))
    if rank != 0:
        return {"run_dir": str(run_dir), "steps": cfg.steps, "rank": rank, "config_hash": cfg.config_hash()}
    last_eval = summary["eval"] or evaluate(loop.weights, eval_data, cfg)  # resumed at the end: evaluate now
    bpp = last_eval["eval_bits_per_pixel"]
    collapsed = bpp < COLLAPSE_BPP
    if collapsed:
        msg = (f"UL latent collapsed: {bpp:.4f} bpp < {COLLAPSE_BPP} (run {run_dir}); the decoder ignores z₀. "
               f"UL-SPEC §5: use c_lf > 1 (now {cfg.c_lf}) or a larger bias_b (now {cfg.bias_b}).")
        warnings.warn(msg, stacklevel=2)
        with open(run_dir / "log.jsonl", "a") as fh:
            fh.write(json.dumps({"step": cfg.steps, "event": "collapse_warning", "message": msg}) + "\n")
    return {
        "run_dir": str(run_dir),
        "steps": cfg.steps,
        "resumed_from": summary["resumed_from"],
        "wall_time_s": summary["train_s"],
        "img_per_s": summary["img_per_s"],
        "bits_per_pixel": bpp,
        "bits_per_pixel_stderr": last_eval["eval_bits_per_pixel_stderr"],
        "bits_per_latent_dim": last_eval["eval_bits_per_latent_dim"],
        "psnr_db": last_eval["eval_psnr_db"],
        "collapsed": collapsed,
        "config_hash": cfg.config_hash(),
        "execution": summary["execution"],
    }
