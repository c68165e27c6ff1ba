"""Train `sd-vae-tiny`: the SD AutoencoderKL architecture, small, with the LDM KL-VAE objective (Rombach et al. 2022).

Objective per image (LDM `LPIPSWithDiscriminator`, without its terms that cannot run here):
    loss = Σ_pixels |x − x̂| + kl_weight · KL(q(z|x) ‖ N(0, I)),  z ~ q(z|x) during training,
divided by the pixel count (Adam is invariant to that constant). Off, and recorded as off in the JSON:
LPIPS (no real backbone weights offline; LDM weight 1.0), the patch-GAN (LDM starts it at step 50,001) and
the learned output log-variance. Everything a run needs is keyword arguments; a finished run is a diffusers
folder (safetensors) plus `sd_vae_tiny.json`, which is written last, atomically.
Speed (measured): ~0.2 s/step at batch 32 on 2 idle cores (600 steps ≈ 2 min); with the cores shared by
three jobs, 2 threads fell to 2-3 s/step while `num_threads=1` ran at 0.5-0.9 s/step. 600 steps reached
24.8 dB train / 25.6 dB eval PSNR (posterior mean), ≈3,000 KL bits per 32×32 image.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from baselines.diffusers_space import kl_bits_per_image, to_uint8, to_unit_range
from baselines.sd_vae import TINY_JSON
from ul_models.training.data import ImageBatches
from ul_models.training.loop import Loop, LoopConfig
from ulbench.device import Execution
from ulbench.device import num_threads as device_threads

TINY_CONFIG = {  # SD-VAE layout, scaled down: 32×32 → 8×8×4 latents (factor 4), ~0.68M parameters
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "sample_size": 32,
    "down_block_types": ("DownEncoderBlock2D",) * 3, "up_block_types": ("UpDecoderBlock2D",) * 3,
    "block_out_channels": (16, 32, 64),  # SD: (128, 256, 512, 512); 3 levels → downsampling factor 4
    "layers_per_block": 1,  # SD: 2
    "norm_num_groups": 8,  # SD: 32
}


def tiny_autoencoder_kl(seed: int = 0, **overrides: Any) -> Any:
    """A randomly initialised small AutoencoderKL (TINY_CONFIG + overrides), init fixed by `seed`."""
    from diffusers import AutoencoderKL

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return AutoencoderKL(**{**TINY_CONFIG, **overrides})


@torch.no_grad()
def latent_stats(vae: Any, images: torch.Tensor, batch_size: int = 256) -> dict[str, Any]:
    """Per-channel mean and std (float64) of posterior-mean latents, for unit-variance normalisation (UL-SPEC §6)."""
    total, total_sq, count = 0.0, 0.0, 0
    device = next(vae.parameters()).device
    for chunk in images.split(batch_size):
        mean = vae.encode(to_unit_range(chunk.to(device))).latent_dist.mean.to(torch.float64).cpu()
        total = total + mean.sum((0, 2, 3))
        total_sq = total_sq + mean.square().sum((0, 2, 3))
        count += mean.shape[0] * mean.shape[2] * mean.shape[3]
    mu = total / count
    std = (total_sq / count - mu.square()).clamp_min(1e-12).sqrt()
    return {"mean": mu.tolist(), "std": std.tolist(), "num_images": len(images), "latent": "posterior mean"}


@torch.no_grad()
def reconstruction_metrics(vae: Any, images: torch.Tensor, batch_size: int = 256) -> dict[str, float]:
    """Mean per-image PSNR (dB, uint8 peak 255) of posterior-mean reconstructions, and mean KL bits per image."""
    psnrs, bits = [], []
    device = next(vae.parameters()).device
    for chunk in images.split(batch_size):
        dist = vae.encode(to_unit_range(chunk.to(device))).latent_dist
        x_hat = to_uint8(vae.decode(dist.mean).sample).cpu()
        mse = (x_hat.to(torch.float64) - chunk.to(torch.float64)).square().flatten(1).mean(1)
        psnrs.append((10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))).numpy())
        bits.append(kl_bits_per_image(dist.mean.float().cpu(), dist.logvar.float().cpu()))
    return {"psnr_db": float(np.concatenate(psnrs).mean()), "kl_bits_per_image": float(np.concatenate(bits).mean()),
            "num_images": len(images)}


def _spread(images: torch.Tensor, num_images: int) -> torch.Tensor:
    """At most num_images evenly spaced images (all when there are fewer)."""
    if len(images) <= num_images:
        return images
    return images[torch.linspace(0, len(images) - 1, num_images).round().long()]


def _finish_run(vae: Any, run_dir: Path, meta: dict[str, Any]) -> None:
    """Write weights (safetensors) then the JSON, each moved into place atomically; the JSON marks completion."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-sd-vae-tiny-", dir=run_dir))
    try:
        vae.save_pretrained(tmp, safe_serialization=True)
        for f in tmp.iterdir():
            os.replace(f, run_dir / f.name)
        (tmp / TINY_JSON).write_text(json.dumps(meta, indent=2, sort_keys=True))
        os.replace(tmp / TINY_JSON, run_dir / TINY_JSON)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


TRAIN_CHECKPOINT = "train_checkpoint.safetensors"  # the loop's checkpoint of an unfinished run (resumable)


class KLVAEObjective:
    """The LDM KL-VAE loss per image: (Σ|x − x̂| + kl_weight·KL(q(z|x) ‖ N(0, I))) / pixels, z ~ q(z|x)."""

    stream, name = "sd_vae_tiny", "sd-vae-tiny"

    def __init__(self, config: dict[str, Any], kl_weight: float):
        self.config, self.kl_weight = config, kl_weight

    def build(self) -> Any:
        """A small diffusers AutoencoderKL (init from the loop's seeded RNG)."""
        from diffusers import AutoencoderKL

        return AutoencoderKL(**self.config)

    def loss(self, vae: Any, batch: dict[str, torch.Tensor], noise) -> dict[str, torch.Tensor]:
        """Per-image L1 sum, KL (nats) and the optimised loss per subpixel."""
        x = to_unit_range(batch["x"]).contiguous(memory_format=torch.channels_last)
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * noise.randn(*posterior.mean.shape[1:]).to(posterior.mean.dtype)
        x_hat = vae.decode(z).sample
        rec = (x_hat.float() - x).abs().flatten(1).sum(1)  # Σ_pixels |x − x̂| per image
        kl = posterior.kl().float()  # nats per image
        return {"loss": (rec + self.kl_weight * kl) / x[0].numel(), "l1_sum": rec, "kl_nats": kl}


def train_sd_vae_tiny(run_dir: str, steps: int = 600, batch_size: int = 32, lr: float = 2e-3,
                      kl_weight: float = 1e-6, seed: int = 0, progress: bool = True, resolution: int = 32,
                      dataset: str = "embedded", warmup_steps: int = 50, grad_clip: float = 1.0,
                      overwrite: bool = False, config_overrides: dict[str, Any] | None = None,
                      num_threads: int | None = None, metric_images: int = 1024,
                      execution: Execution | None = None) -> dict[str, Any]:
    """Train sd-vae-tiny with the LDM KL-VAE objective on the embedded train set (Rombach et al. 2022, App. G)."""
    with device_threads(num_threads):  # 1 is much faster than 2 when other jobs share the cores
        return _train(run_dir, steps, batch_size, lr, kl_weight, seed, progress, resolution, dataset, warmup_steps,
                      grad_clip, overwrite, config_overrides or {}, metric_images, execution)


def _train(run_dir: str, steps: int, batch_size: int, lr: float, kl_weight: float, seed: int, progress: bool,
           resolution: int, dataset: str, warmup_steps: int, grad_clip: float, overwrite: bool,
           config_overrides: dict[str, Any], metric_images: int, execution: Execution | None) -> dict[str, Any]:
    """The training loop of train_sd_vae_tiny (arguments documented there)."""
    from ulbench.data.base import load_dataset

    run_path = Path(run_dir).expanduser()
    if (run_path / TINY_JSON).exists() and not overwrite:
        raise ValueError(f"{str(run_path)!r} already holds a finished sd-vae-tiny run; pass overwrite=True or "
                         "choose another run_dir.")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got steps={steps}, batch_size={batch_size}")
    train = load_dataset(dataset, split="train", resolution=resolution)
    evalset = load_dataset(dataset, split="eval", resolution=resolution)
    overrides = {"sample_size": resolution, **config_overrides}
    if overwrite:  # a fresh run: forget a finished one and any unfinished checkpoint
        for name in (TINY_JSON, TRAIN_CHECKPOINT, "train_checkpoint.state.json", "train_log.jsonl"):
            (run_path / name).unlink(missing_ok=True)
    cfg = LoopConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps, lr_decay="cosine",
                     lr_floor=0.1, grad_clip=grad_clip, ema=None, seed=seed, checkpoint_every=100, log_every=50,
                     channels_last=True, extra={"config": {**TINY_CONFIG, **overrides}, "kl_weight": kl_weight,
                                                "dataset": dataset, "resolution": resolution})
    loop = Loop(KLVAEObjective({**TINY_CONFIG, **overrides}, kl_weight), cfg, execution,
                checkpoint=run_path / TRAIN_CHECKPOINT, log=run_path / "train_log.jsonl")
    summary = loop.run(ImageBatches(train), resume=True, progress=progress)
    if not loop.lead:
        return {"run_dir": str(run_path), "rank": loop.rank}
    images = train.images
    vae = loop.net
    train_seconds = summary["train_s"]
    vae = vae.to(memory_format=torch.contiguous_format).eval()
    stats = latent_stats(vae, images)
    metrics = {"train": reconstruction_metrics(vae, _spread(images, metric_images)),
               "eval": reconstruction_metrics(vae, _spread(evalset.images, metric_images)),
               "final_loss": summary["last"].get("loss", float("nan")), "train_seconds": train_seconds,
               "seconds_per_step": train_seconds / max(1, steps - summary["resumed_from"]),
               "torch_threads": torch.get_num_threads(), "execution": summary["execution"]}
    meta = {
        "format": "ulbench sd-vae-tiny v1",
        "train": {"steps": steps, "batch_size": batch_size, "lr": lr, "kl_weight": kl_weight, "seed": seed,
                  "resolution": resolution, "dataset": dataset, "split": "train", "warmup_steps": warmup_steps,
                  "grad_clip": grad_clip, "optimizer": "AdamW(betas=(0.9, 0.99), weight_decay=0)",
                  "batch_order": "seeded epoch permutations (ul_models.training.data)",
                  "lr_schedule": "linear warm-up, cosine to 0.1*lr", "samples_seen": steps * batch_size,
                  "config": {k: list(v) if isinstance(v, tuple) else v
                             for k, v in {**TINY_CONFIG, **overrides}.items()}},
        "objective": {"reconstruction": "L1 (sum over pixels)", "kl_weight": kl_weight,
                      "kl": "KL(q(z|x) || N(0, I)), posterior sampled during training",
                      "lpips_term": "off: no real LPIPS backbone weights offline (LDM uses weight 1.0)",
                      "discriminator": "off (LDM enables it only after 50,001 steps)",
                      "learned_logvar": "off"},
        "latent_stats": stats,
        "metrics": {**metrics, "metric_images": f"at most {metric_images} evenly spaced images per split"},
    }
    _finish_run(vae, run_path, meta)
    return meta
