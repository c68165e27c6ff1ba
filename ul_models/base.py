"""Stage 2: a class-conditional diffusion base model over any LatentSpace's latents (UL-SPEC §6).

UL: the base model's data is z_clean and its minimum noise is λ₀, so its sample at λ₀ *is* z₀, which the UL
decoder turns into pixels. SD-VAE and pixels: the base model denoises normalised latents / pixels to λ_max = 10.
The same network family and training loop serve all three, so costs and qualities compare.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ul_models.checkpoint import atomic_write, read_checkpoint
from ul_models.losses import decoder_loss, mix_seed
from ul_models.nets import Denoiser, count_params
from ul_models.sampler import sample
from ul_models.schedule import Schedule, resolution_shift
from ul_models.seeds import STREAMS
from ul_models.training.data import TensorBatches
from ul_models.training.loop import Loop, LoopConfig
from ulbench.device import Execution
from ulbench.protocols import require_finite
from ulbench.spaces import DiffusionTarget, diffusion_target, space_info

BASE_CHECKPOINT = "base.safetensors"
BASE_CONFIG = "base_config.json"
LABEL_STREAM = STREAMS["labels"]  # generation: one label per seed


@dataclass(frozen=True)
class BaseConfig:
    """Stage-2 base model: what it models (space) and how it trains; `config_hash()` names it."""

    space: str  # registry spec of the latent space: ul:RUN_DIR | sd-vae-tiny:RUN_DIR | pixel | ...
    data: str = "embedded"  # training images (class labels are used when the data has them)
    resolution: int = 32
    channels: tuple[int, ...] = (48, 96)  # UNet levels
    num_blocks: int = 1  # residual blocks per level
    emb_dim: int = 64  # log-SNR / label embedding width
    patch_size: int = 0  # 0: auto (2 for 32×32 pixels, 1 for latents)
    prediction: str = "auto"  # auto: v for pixels, eps for latents
    logsnr_min: float = -10.0  # most noise
    bias_b: float = 0.0  # sigmoid weighting w(λ) = sigmoid(b − λ) of the ε-form loss [ours: 0]
    class_conditional: bool = True
    steps: int = 600
    batch_size: int = 64
    lr: float = 2e-3
    warmup_steps: int = 50
    grad_clip: float = 1.0
    ema: float = 0.99
    seed: int = 0
    checkpoint_every: int = 200
    num_threads: int = 2

    def config_hash(self) -> str:
        """sha256 (12 hex) of the canonical JSON config."""
        from ulbench.results import config_hash

        return config_hash(dataclasses.asdict(self))


def target_of(space: Any) -> DiffusionTarget:
    """The space's diffusion target (ulbench/spaces.py), or a clear error when it has no continuous latents."""
    target = diffusion_target(space)
    if target is None:
        raise ValueError(f"space {getattr(space, 'name', space)!r} has no continuous latents (SpaceInfo."
                         "latent_channels is None), so no stage-2 model can learn it")
    return target


def build_base(cfg: BaseConfig, data_shape: tuple[int, int, int], num_classes: int, logsnr_max: float):
    """The denoiser and its schedule (resolution shift of simple diffusion for pixel-sized data)."""
    c, h, _ = data_shape
    pixels = h == cfg.resolution
    patch = cfg.patch_size or (2 if pixels and h >= 32 else 1)
    prediction = cfg.prediction if cfg.prediction != "auto" else ("v" if pixels else "eps")
    net = Denoiser(c, cfg.channels, cfg.num_blocks, emb_dim=cfg.emb_dim,
                   num_classes=num_classes if cfg.class_conditional else 0, prediction=prediction,
                   patch_size=patch)
    shift = resolution_shift(h) if pixels else 0.0
    return net, Schedule("cosine", cfg.logsnr_min, logsnr_max, shift)


def _load(run_dir: Path, net=None, ema=None, opt=None) -> dict[str, Any]:
    return read_checkpoint(run_dir / BASE_CHECKPOINT, {"net": net, "ema": ema}, opt)[0]


class BaseObjective:
    """Stage-2 loss on precomputed latents: sigmoid-weighted ε-form ELBO, down to the space's λ_max (§6)."""

    stream, name = "base", "base"

    def __init__(self, cfg: BaseConfig, data_shape: tuple[int, int, int], num_classes: int, logsnr_max: float):
        self.cfg, self.data_shape, self.num_classes, self.logsnr_max = cfg, data_shape, num_classes, logsnr_max
        self.schedule = build_base(cfg, data_shape, num_classes, logsnr_max)[1]

    def build(self) -> Denoiser:
        """The UNet denoiser."""
        return build_base(self.cfg, self.data_shape, self.num_classes, self.logsnr_max)[0]

    def loss(self, net: Denoiser, batch: dict[str, torch.Tensor], noise) -> dict[str, torch.Tensor]:
        """Per-sample weighted loss (nats) and the optimised nats per dimension."""
        z, lab = batch["z"], batch["label"] if self.num_classes else None
        t, eps = noise.stratified_t(), noise.randn(*z.shape[1:])
        terms = decoder_loss(lambda z_t, lam: net.eps(z_t, lam, None, lab), z, t, eps, self.schedule, self.cfg.bias_b)
        return {"loss": terms["dec"] / z[0].numel(), "dec": terms["dec"], "dec_elbo": terms["dec_elbo"]}


def base_loop_config(cfg: BaseConfig) -> LoopConfig:
    """Loop settings of a base-model config (AdamW β = (0.9, 0.99) like every trainer)."""
    return LoopConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                      grad_clip=cfg.grad_clip, ema=cfg.ema, seed=cfg.seed, checkpoint_every=cfg.checkpoint_every,
                      log_every=50, num_threads=cfg.num_threads,
                      extra={k: v for k, v in dataclasses.asdict(cfg).items()
                             if k not in ("steps", "checkpoint_every", "num_threads")})


def train_base(cfg: BaseConfig, run_dir: str | Path, resume: bool = True, progress: bool = True,
               space: Any = None, execution: Execution | None = None) -> dict[str, Any]:
    """Train the base model on the space's latents of the training split (sigmoid-weighted ELBO, §6)."""
    from ulbench import dist
    from ulbench.data import load_dataset
    from ulbench.registry import SPACES

    run_dir = Path(run_dir)
    with dist.rank_zero_first():
        run_dir.mkdir(parents=True, exist_ok=True)
    space = space if space is not None else SPACES.build(cfg.space)
    target = target_of(space)
    ds = load_dataset(cfg.data, split="train", resolution=cfg.resolution)
    x, labels = ds.get(np.arange(len(ds)))
    x = torch.cat([x, x.flip(-1)])  # horizontal flips, encoded once
    labels = torch.cat([labels, labels])
    seeds = torch.arange(len(x), dtype=torch.int64)
    t0 = time.perf_counter()
    data = torch.cat([target.data(x[i:i + 256], seeds[i:i + 256]).cpu() for i in range(0, len(x), 256)])
    encode_s = time.perf_counter() - t0
    num_classes = ds.num_classes if cfg.class_conditional else 0
    meta = {"config": dataclasses.asdict(cfg), "config_hash": cfg.config_hash(), "data_shape": list(data.shape[1:]),
            "num_classes": num_classes, "logsnr_max": target.logsnr_max, "return_noisy": target.sample_is_latent,
            "data_std": float(data.std()), "target": target.note,
            "space_provenance": space_info(space).provenance, "encoded_images": len(x)}
    loop = Loop(BaseObjective(cfg, tuple(data.shape[1:]), num_classes, target.logsnr_max), base_loop_config(cfg),
                execution, checkpoint=run_dir / BASE_CHECKPOINT, log=run_dir / "base_log.jsonl", meta=meta)
    meta["params"] = count_params(loop.net)
    if loop.lead:
        atomic_write(run_dir / BASE_CONFIG, lambda p: p.write_text(json.dumps(meta, indent=1, default=str)))
    summary = loop.run(TensorBatches(z=data, label=labels), resume=resume, progress=progress)
    return {"run_dir": str(run_dir), "steps": cfg.steps, "samples_seen": summary["samples_seen"],
            "params": summary["params"], "encode_s": encode_s, "train_s": summary["train_s"],
            "img_per_s": summary["img_per_s"], "execution": summary["execution"]}


class BaseGenerator:
    """Generator: base-model sample (per-sample seeds and labels) decoded by the space (UL-SPEC §6)."""

    def __init__(self, run_dir: str | Path, space: Any = None, steps: int = 32, decode_steps: int | None = None):
        from ulbench.registry import SPACES

        run_dir = Path(run_dir)
        if not (run_dir / BASE_CHECKPOINT).exists():
            raise ValueError(f"{run_dir}: no {BASE_CHECKPOINT}; train a base model with `ulbench train base`")
        meta = json.loads((run_dir / BASE_CONFIG).read_text())
        self.cfg = BaseConfig(**{**meta["config"], "channels": tuple(meta["config"]["channels"])})
        self.space = space if space is not None else SPACES.build(self.cfg.space)
        self.target = target_of(self.space)
        self.net, self.schedule = build_base(self.cfg, tuple(meta["data_shape"]), meta["num_classes"],
                                             meta["logsnr_max"])
        state = _load(run_dir, ema=self.net)
        self.trained_steps, self.checkpoint_sha256 = int(state["step"]), state["checkpoint_sha256"]
        self.net.eval()
        self.meta, self.steps, self.decode_steps, self.run_dir = meta, steps, decode_steps, str(run_dir)
        self.name = f"base[{getattr(self.space, 'name', self.cfg.space)}]"
        self.device, self.precision = torch.device("cpu"), "fp32"

    def to(self, device: str | torch.device, precision: str | None = None) -> "BaseGenerator":
        """Run the base model (and the space's decoder) on `device` under `precision` autocast; returns self."""
        from ulbench.device import check_precision, resolve_device

        self.device, self.precision = resolve_device(device), check_precision(precision or self.precision)
        self.net.to(self.device)
        if hasattr(self.space, "to"):
            self.space.to(self.device, self.precision)
        return self

    def labels_for(self, seeds: torch.Tensor, class_probs: np.ndarray | None) -> torch.Tensor | None:
        """One label per seed drawn from the training class frequencies (per-seed, batch-independent)."""
        if not self.meta["num_classes"]:
            return None
        k = self.meta["num_classes"]
        p = class_probs if class_probs is not None else np.full(k, 1.0 / k)
        return torch.tensor([np.random.default_rng(mix_seed(int(s), LABEL_STREAM)).choice(k, p=p) for s in seeds])

    @torch.no_grad()
    def sample(self, seeds: torch.Tensor, steps: int | None = None, labels: torch.Tensor | None = None,
               class_probs: np.ndarray | None = None) -> torch.Tensor:
        """uint8 NCHW samples; sample i depends only on seeds[i] (and labels[i])."""
        seeds = torch.as_tensor(seeds, dtype=torch.int64)
        if labels is None:
            labels = self.labels_for(seeds, class_probs)
        shape = tuple(self.meta["data_shape"])
        cond = labels.float().to(self.device) if labels is not None else None
        z = sample(lambda z_t, lam, c: self.net.eps(z_t, lam, None, None if c is None else c.long()),
                   shape, seeds, self.schedule, steps or self.steps, cond=cond,
                   return_noisy=self.target.sample_is_latent, clip_x=self.target.clip, micro_batch=16,
                   device=self.device, precision=self.precision)
        require_finite(z, f"base model {self.run_dir}")  # named here, not later as the decoder's NaN
        if self.target.to_latent is not None:
            z = self.target.to_latent(z, seeds)
        return self.space.decode(z, seeds, self.decode_steps)

    def info(self) -> dict[str, Any]:
        """Base-model provenance."""
        return {"generator": self.name, "base_config_hash": self.cfg.config_hash(), "trained_steps":
                self.trained_steps, "sample_steps": self.steps, "decode_steps": self.decode_steps,
                "params": count_params(self.net), "run_dir": self.run_dir,
                "logsnr_max": self.meta["logsnr_max"], "sample_is_z0": self.meta["return_noisy"],
                "base_checkpoint": BASE_CHECKPOINT, "base_checkpoint_sha256": self.checkpoint_sha256,
                "space_checkpoint_sha256": space_info(self.space).provenance.get("checkpoint_sha256")}


class PriorGenerator:
    """Single-stage generation [ours]: a space's own prior (UL: the jointly trained stage-1 prior) is the base
    model; its sample is decoded as is (UL-SPEC §7 "single stage"; unconditional, the prior sees no labels)."""

    def __init__(self, space: Any, steps: int = 32, decode_steps: int | None = None):
        if not callable(getattr(space, "sample_prior", None)):
            raise ValueError(f"single-stage generation needs a space with its own prior (sample_prior); "
                             f"{getattr(space, 'name', space)!r} has none")
        self.space, self.steps, self.decode_steps = space, steps, decode_steps
        self.name = f"prior[{space.name}]"

    def to(self, device: str | torch.device, precision: str | None = None) -> "PriorGenerator":
        """Run prior and decoder on `device` (the space's networks); returns self."""
        self.space.to(device, precision)
        return self

    @torch.no_grad()
    def sample(self, seeds: torch.Tensor, steps: int | None = None, labels: torch.Tensor | None = None,
               class_probs: np.ndarray | None = None) -> torch.Tensor:
        """The space's prior sample, decoded to uint8 NCHW."""
        seeds = torch.as_tensor(seeds, dtype=torch.int64)
        z = require_finite(self.space.sample_prior(seeds, steps or self.steps), f"prior of {self.space.name} "
                           f"({getattr(self.space, 'run_dir', '')})")
        return self.space.decode(z, seeds, self.decode_steps)

    def info(self) -> dict[str, Any]:
        """Provenance of the prior-as-base generator."""
        return {"generator": self.name, "sample_steps": self.steps, "decode_steps": self.decode_steps,
                "params": space_info(self.space).params.get("prior"), "sample_is_z0": True,
                "space_checkpoint_sha256": space_info(self.space).provenance.get("checkpoint_sha256")}
