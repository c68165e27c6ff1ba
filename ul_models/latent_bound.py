"""The UL bits bound for any deterministic latent space: normalise, noise at λ₀, fit a prior (UL-SPEC §3, §6).

A deterministic latent (SD-VAE posterior mean, pixels) carries unbounded information, so its bits are not
defined until noise is added. We give every space the channel UL uses: z_clean = (z − μ_c)/s_c with per-channel
train-set statistics (unit variance, as the base model sees SD-VAE latents), z₀ = α₀·z_clean + σ₀·ε at λ₀ = 5,
and fit a diffusion prior aligned to λ₀ with unit weight, so L_prior ≥ KL(q(z₀|x) ‖ p(z₀)) is a measured,
explicit rate of the space (an upper bound: a better prior only lowers it). UL spaces already have this bound.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ul_models.checkpoint import atomic_write, read_checkpoint
from ul_models.losses import estimate_prior_nats, prior_loss
from ul_models.nets import Denoiser
from ul_models.schedule import Schedule
from ul_models.training.data import TensorBatches
from ul_models.training.loop import Loop, LoopConfig
from ulbench.device import Execution, num_threads

BOUND_CHECKPOINT = "latent_prior.safetensors"
BOUND_JSON = "latent_prior.json"  # config, normalisation and training summary, written last
CHECKPOINT_EVERY = 200  # steps between atomic checkpoints of an unfinished fit


@dataclass(frozen=True)
class BoundConfig:
    """The fitted prior of the bound: channel (λ₀, λ_min), network and optimisation (plain arguments)."""

    lambda0: float = 5.0  # λ₀ of the added channel noise (UL-SPEC §2); the prior's minimum noise
    lambda_min: float = -10.0  # λ_min of the prior schedule
    channels: tuple[int, ...] = (32, 48)  # UNet levels (UL tiny prior); pixel-sized latents use patch 2
    num_blocks: int = 1  # residual blocks per level
    emb_dim: int = 64  # log-SNR embedding width
    patch_size: int = 0  # 0: auto (2 when the latent side is ≥ 32, else 1)
    steps: int = 600  # training steps
    batch_size: int = 64  # latents per step
    lr: float = 2e-3  # AdamW peak learning rate (linear warm-up)
    warmup_steps: int = 50
    grad_clip: float = 1.0
    ema: float = 0.99  # EMA decay of the weights used for the bound
    seed: int = 0
    draws: int = 16  # (t, ε) draws per image for the evaluation estimate (standard error reported)
    num_threads: int = 2

    def config_hash(self) -> str:
        """sha256 (12 hex) of the canonical JSON config."""
        from ulbench.results import config_hash

        return config_hash(dataclasses.asdict(self))


def channel_stats(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (float64) over images and positions of latents (N, C, H, W)."""
    z64 = z.double()
    mu = z64.mean((0, 2, 3))
    std = z64.var((0, 2, 3), unbiased=False).clamp_min(1e-24).sqrt()
    return mu, std


def build_prior(cfg: BoundConfig, latent_shape: tuple[int, int, int]) -> tuple[Denoiser, Schedule]:
    """ε-head latent UNet and its unit-weight schedule λ₀ → λ_min (UL-SPEC §3)."""
    c, h, _ = latent_shape
    patch = cfg.patch_size or (2 if h >= 32 else 1)
    levels = cfg.channels
    while len(levels) > 1 and (h // patch) % 2 ** (len(levels) - 1):
        levels = levels[:-1]  # fewer levels for small latent sides
    net = Denoiser(c, levels, cfg.num_blocks, emb_dim=cfg.emb_dim, prediction="eps", patch_size=patch)
    return net, Schedule("cosine", cfg.lambda_min, cfg.lambda0)


class LatentBound:
    """A fitted prior over a space's normalised latents; `nats(z)` is L_prior per image (UL-SPEC §3)."""

    def __init__(self, net: Denoiser, schedule: Schedule, mean: torch.Tensor, std: torch.Tensor, cfg: BoundConfig,
                 summary: dict[str, Any] | None = None):
        self.net = net.eval().requires_grad_(False)
        self.schedule, self.cfg, self.summary = schedule, cfg, summary or {}
        device = next(net.parameters()).device
        self.mean = mean.to(device, torch.float32).reshape(1, -1, 1, 1)  # μ_c of the space's latents (train split)
        self.std = std.to(device, torch.float32).reshape(1, -1, 1, 1)  # s_c: z_clean = (z − μ_c)/s_c: unit variance

    def normalise(self, z: torch.Tensor) -> torch.Tensor:
        """z_clean = (z − μ_c)/s_c."""
        return (z.to(self.mean.device, torch.float32) - self.mean) / self.std

    @torch.no_grad()
    def nats(self, z: torch.Tensor, seeds: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Per-image L_prior mean and standard error (nats) of the space's latents `z`, seeded per image."""
        return estimate_prior_nats(self.net.eps, self.normalise(z), self.schedule, seeds, self.cfg.draws)

    def info(self) -> dict[str, Any]:
        """Provenance of the bound: channel, normalisation, prior size and training."""
        return {"bound": "UL-SPEC §3 L_prior of a prior fitted to the space's latents, unit-variance per channel, "
                         f"noised at lambda0={self.cfg.lambda0}", "config": dataclasses.asdict(self.cfg),
                "config_hash": self.cfg.config_hash(), "params": sum(p.numel() for p in self.net.parameters()),
                "normalisation_mean": self.mean.flatten().tolist(),
                "normalisation_std": self.std.flatten().tolist(), **self.summary}


def fit_latent_bound(z_train: torch.Tensor, cfg: BoundConfig, run_dir: str | Path | None = None,
                     progress: bool = False, execution: Execution | None = None) -> LatentBound:
    """Fit the prior on train latents (N, C, H, W) with the unit-weight L_prior; resumable from `run_dir`."""
    with num_threads(cfg.num_threads):
        return _fit(z_train, cfg, None if run_dir is None else Path(run_dir), progress, execution)


class BoundObjective:
    """The unit-weight L_prior of normalised latents (UL-SPEC §3) as a loop objective."""

    stream, name = "latent_bound", "latent prior"

    def __init__(self, cfg: BoundConfig, latent_shape: tuple[int, int, int]):
        self.cfg, self.latent_shape = cfg, latent_shape
        self.schedule = build_prior(cfg, latent_shape)[1]

    def build(self) -> Denoiser:
        """The ε-head latent UNet."""
        return build_prior(self.cfg, self.latent_shape)[0]

    def loss(self, net: Denoiser, batch: dict[str, torch.Tensor], noise) -> dict[str, torch.Tensor]:
        """Per-latent L_prior (nats) and the optimised nats per dimension."""
        z = batch["z"]
        t, eps = noise.stratified_t(), noise.randn(*z.shape[1:])
        nats = prior_loss(net.eps, z, t, eps, self.schedule)["prior"]
        return {"loss": nats / z[0].numel(), "prior": nats}


def _fit(z_train: torch.Tensor, cfg: BoundConfig, run_dir: Path | None, progress: bool,
         execution: Execution | None) -> LatentBound:
    if z_train.ndim != 4 or len(z_train) < 2:
        raise ValueError(f"latent bound: expected train latents (N>=2, C, H, W), got {tuple(z_train.shape)}")
    if not torch.isfinite(z_train).all():
        raise ValueError("latent bound: the space produced non-finite latents on the train split")
    mean, std = channel_stats(z_train)
    data = ((z_train.double().cpu() - mean.reshape(1, -1, 1, 1)) / std.reshape(1, -1, 1, 1)).float()
    loop_cfg = LoopConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                          grad_clip=cfg.grad_clip, ema=cfg.ema, seed=cfg.seed, checkpoint_every=CHECKPOINT_EVERY,
                          log_every=50, extra={"bound_config_hash": cfg.config_hash()})
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
    loop = Loop(BoundObjective(cfg, tuple(data.shape[1:])), loop_cfg, execution,
                checkpoint=None if run_dir is None else run_dir / BOUND_CHECKPOINT,
                log=None if run_dir is None else run_dir / "latent_prior_log.jsonl")
    out = loop.run(TensorBatches(z=data), resume=True, progress=progress)
    summary = {"train_images": len(data), "latent_shape": list(data.shape[1:]), "steps": cfg.steps,
               "last_train_nats_per_image": out["last"].get("prior", float("nan")),
               "fit_s": round(out["train_s"], 1)}
    if run_dir is not None and (run_dir / BOUND_CHECKPOINT).is_file():  # the fitted prior's file, for bound rows
        summary["latent_prior_sha256"] = hashlib.sha256((run_dir / BOUND_CHECKPOINT).read_bytes()).hexdigest()
    bound = LatentBound(loop.weights, loop.objective.schedule, mean, std, cfg, summary)
    if run_dir is not None and loop.lead:
        meta = {"config": dataclasses.asdict(cfg), "mean": mean.tolist(), "std": std.tolist(), **summary}
        atomic_write(run_dir / BOUND_JSON, lambda p: p.write_text(json.dumps(meta, indent=1)))
    return bound


def load_latent_bound(run_dir: str | Path) -> LatentBound:
    """A finished fit from `run_dir` (BOUND_JSON is written last, so its presence means finished)."""
    run_dir = Path(run_dir)
    if not (run_dir / BOUND_JSON).is_file():
        raise FileNotFoundError(f"{run_dir}: no {BOUND_JSON}; fit one with fit_latent_bound(..., run_dir=...)")
    meta = json.loads((run_dir / BOUND_JSON).read_text())
    cfg = BoundConfig(**{**meta["config"], "channels": tuple(meta["config"]["channels"])})
    net, schedule = build_prior(cfg, tuple(meta["latent_shape"]))
    state = read_checkpoint(run_dir / BOUND_CHECKPOINT, {"ema": net})[0]
    summary = {k: v for k, v in meta.items() if k not in ("config", "mean", "std")}
    summary["latent_prior_sha256"] = state["checkpoint_sha256"]  # the fitted prior's file, for bound rows
    return LatentBound(net, schedule, torch.tensor(meta["mean"]), torch.tensor(meta["std"]), cfg, summary)


def bound_for_space(space: Any, train: Any, cfg: BoundConfig, run_dir: str | Path, seed: int = 0,
                    progress: bool = False, execution: Execution | None = None) -> "BoundedSpace":
    """`space` with its UL bound: reuse the finished fit in `run_dir`, else encode `train` and fit (resumable)."""
    run_dir = Path(run_dir)
    if (run_dir / BOUND_JSON).exists():
        bound = load_latent_bound(run_dir)
        if bound.cfg != cfg:
            raise ValueError(f"{run_dir} holds a bound fitted with another BoundConfig; use a new directory")
        return BoundedSpace(space, bound)
    from ulbench.harness import per_index_seeds

    idx = np.arange(len(train))
    with torch.inference_mode():
        z = torch.cat([space.encode(train.get(i)[0], per_index_seeds(i, seed))
                       for i in np.array_split(idx, max(1, len(idx) // 256))])
    return BoundedSpace(space, fit_latent_bound(z, cfg, run_dir, progress, execution))


class BoundedSpace:
    """A LatentSpace with one more bits variant, "ul_bound": L_prior of its latents in bits (UL-SPEC §3)."""

    def __init__(self, space: Any, bound: LatentBound):
        self.space, self.bound = space, bound
        self.name = getattr(space, "name", type(space).__name__)

    def __getattr__(self, item: str) -> Any:  # everything else is the wrapped space's
        return getattr(self.space, item)

    def encode(self, x_uint8: torch.Tensor, seeds: torch.Tensor) -> Any:
        """The wrapped space's latents."""
        return self.space.encode(x_uint8, seeds)

    def decode(self, z: Any, seeds: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """The wrapped space's decoder."""
        return self.space.decode(z, seeds, steps)

    def reconstruct(self, x_uint8: torch.Tensor, seeds: torch.Tensor) -> Any:
        """The wrapped reconstruction plus bits["ul_bound"] (and its estimator standard error) per image."""
        rec = self.space.reconstruct(x_uint8, seeds)
        z = rec.z if rec.z is not None else self.space.encode(x_uint8, seeds)
        nats, se = self.bound.nats(z, torch.as_tensor(seeds))
        bits = {**(rec.bits or {}), "ul_bound": nats / math.log(2.0)}
        stderr = {**(rec.bits_stderr or {}), "ul_bound": se / math.log(2.0)}
        return dataclasses.replace(rec, bits=bits, bits_stderr=stderr)

    def info(self) -> Any:
        """The wrapped space's SpaceInfo with the bound's provenance in its details."""
        from ulbench.spaces import space_info

        info = space_info(self.space)
        return info.replace(details={**info.details, "ul_bound": self.bound.info()})
