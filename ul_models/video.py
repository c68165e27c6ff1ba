"""Video Unified Latents: a per-frame UL plus a temporal base model that predicts future frames (UL-SPEC §2-6).

Design [ours], chosen for 2 CPU cores:
- **Per-frame UL.** The image encoder, prior and decoder of `ul_models` are applied to each frame independently
  and trained with `train_stage1` on the frames of the training clips. A video's bits are the sum of its frames'
  prior bounds L_prior (UL-SPEC §3, the same bound), reported as bits per pixel per frame. A 3-D (spatio-temporal)
  encoder would save the bits of temporal redundancy, but it costs far more compute than we have and it would no
  longer reuse (and so test) the image model.
- **Temporal modelling in stage 2.** The base model sees all frames: a `Denoiser` over the T−K future frames'
  latents stacked along channels ((T−K)·C channels at the latent side), conditioned on the K context frames'
  z_clean stacked as `cond` channels and on the class label. It is trained sigmoid-weighted with λ₀ as its
  minimum noise, so its sample at λ₀ *is* each future frame's z₀ (as `ul_models.base.LatentTarget` for UL),
  which the UL decoder turns into pixels (per-frame seeds). Two choices [ours], measured on the embedded clips:
  a v head (an ε head trained 300 steps drew samples of std 15 for data of std 0.31: ε errors of ~1% are
  amplified e^{−λ/2}-fold at λ_min = −10 over 44 stacked channels), and `residual`: the model's data is each
  future frame minus the last context frame (deterministic given the condition, so for UL the sample at λ₀ plus
  α₀·anchor is still exactly z₀ = α₀·z_clean + σ₀·ε).
- **Pixel baseline.** The same base model on the future frames' pixels ((T−K)·3 channels, patch 2), conditioned
  on the context pixels; λ_max = 10 and the resolution shift of simple diffusion, as the image pixel baseline.
Frame prediction follows the Kinetics-600 FVD protocol scaled down: condition on 5 frames, predict 11 (16-frame
clips); the predicted clip is the real context followed by the predicted frames.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ul_models.checkpoint import atomic_write, read_checkpoint
from ul_models.losses import decoder_loss, mix_seed
from ul_models.nets import Denoiser, count_params
from ul_models.sampler import sample
from ul_models.schedule import Schedule, alpha_sigma, resolution_shift
from ul_models.seeds import STREAMS
from ul_models.training.data import TensorBatches
from ul_models.training.loop import Loop, LoopConfig
from ulbench.device import Execution

VIDEO_BASE_CONFIG = "video_base_config.json"
VIDEO_BASE_CHECKPOINT = "video_base.safetensors"  # net, EMA, AdamW (ul_models.checkpoint format)
FRAME_STREAM = STREAMS["frames"]  # frame t of the clip with seed s decodes with mix_seed(s, 51000 + t)


@dataclass(frozen=True)
class VideoBaseConfig:
    """The frame-prediction base model and its clip protocol; `config_hash()` names a trained model."""

    num_frames: int = 16  # T: frames per clip (K600 FVD protocol: 16)
    context_frames: int = 5  # K: real frames the prediction is conditioned on (K600: 5, so 11 are predicted)
    frame_stride: int = 1  # temporal stride of the clips (recorded; the embedded clips are consecutive frames)
    channels: tuple[int, ...] = (48, 96)  # UNet levels
    num_blocks: int = 1  # residual blocks per level
    emb_dim: int = 64  # log-SNR / label embedding width
    patch_size: int = 0  # 0: auto (2 for 32×32 pixels, 1 for latents)
    prediction: str = "v"  # v head: an ε head diverged when sampling 44 stacked latent channels (see docstring)
    residual: bool = True  # [ours] model future − last context frame; the anchor is added back after sampling
    logsnr_min: float = -10.0  # most noise
    bias_b: float = 0.0  # sigmoid weighting w(λ) = sigmoid(b − λ) of the ε-form loss [ours: 0]
    class_conditional: bool = True  # condition on the clip's class label
    hflip: bool = True  # add horizontally flipped training clips
    time_reverse: bool = True  # add time-reversed training clips (pan/zoom played backwards is still a pan/zoom)
    steps: int = 300  # training steps
    batch_size: int = 32  # clips per step
    lr: float = 2e-3  # AdamW peak learning rate
    warmup_steps: int = 50  # linear warm-up steps
    grad_clip: float = 1.0  # global gradient-norm clip
    ema: float = 0.99  # EMA decay of the weights used for sampling
    seed: int = 0  # all training randomness derives from (seed, step)
    checkpoint_every: int = 100  # steps between atomic checkpoints
    num_threads: int = 2  # torch intra-op threads

    def __post_init__(self):
        if not 1 <= self.context_frames < self.num_frames:
            raise ValueError(f"VideoBaseConfig: context_frames={self.context_frames}, num_frames={self.num_frames}; "
                             "expected 1 <= context_frames < num_frames. The K600 protocol uses 5 of 16.")
        for name in ("steps", "batch_size", "checkpoint_every", "num_threads", "frame_stride", "num_blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"VideoBaseConfig: {name}={getattr(self, name)}; expected a positive integer.")
        if self.prediction not in ("eps", "v"):
            raise ValueError(f"VideoBaseConfig: prediction={self.prediction!r}; expected 'eps' or 'v' (v is stable).")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VideoBaseConfig:
        """Build from a suite's `base:` mapping; unknown keys raise ValueError naming the known ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(data) - names)
        if bad:
            raise ValueError(f"unknown video base keys {bad}; expected some of {sorted(names)}. Video-only eval "
                             "knobs (bits_draws, grid_clips) also go under `base:`.")
        return cls(**{k: tuple(v) if k == "channels" else v for k, v in data.items()})

    @property
    def future_frames(self) -> int:
        """T − K frames to predict."""
        return self.num_frames - self.context_frames

    def config_hash(self) -> str:
        """sha256 (12 hex) of the canonical JSON config."""
        from ulbench.results import config_hash

        return config_hash(dataclasses.asdict(self))


class FrameCodec:
    """What the base model sees of a frame: the diffusion target of a per-frame space (UL: z_clean, whose sample at
    λ₀ is z₀), or pixels when no space is given (ulbench/spaces.py)."""

    def __init__(self, space: Any = None, decode_steps: int | None = None):
        from baselines.pixel import PixelSpace
        from ul_models.base import target_of
        from ulbench.spaces import space_info

        self.space = space if space is not None else PixelSpace()
        self.decode_steps = decode_steps  # decoder sampler steps of a stochastic decoder (None: the space's default)
        self.target = target_of(self.space)
        if self.target.to_latent is not None:
            raise ValueError(f"video needs a space whose stage-2 sample decodes as is; {self.space.name!r} re-noises "
                             "its samples (the learned-variance ablation is not supported for video)")
        info = space_info(self.space)
        self.factor = info.downsample_factor
        self.pixels = self.factor == 1  # pixel-sized data: patchify and shift the schedule as simple diffusion does
        self.logsnr_max = self.target.logsnr_max
        self.name = self.space.name
        self.space_hash = info.provenance.get("config_hash")
        self.device = getattr(self.space, "device", torch.device("cpu"))

    def to(self, device: str | torch.device, precision: str | None = None) -> "FrameCodec":
        """Encode and decode frames on `device`; returns self."""
        from ulbench.device import resolve_device

        self.device = resolve_device(device)
        self.space.to(self.device, precision)
        return self

    @torch.no_grad()
    def clean(self, frames_uint8: torch.Tensor) -> torch.Tensor:
        """Clean base-model data per frame (the space's diffusion target; seeds 0: frame encoders are deterministic
        here, and a fixed seed keeps the data independent of how frames are batched)."""
        seeds = torch.zeros(frames_uint8.shape[0], dtype=torch.int64)
        return self.target.data(frames_uint8.to(self.device), seeds).to(self.device)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, frame_seeds: torch.Tensor) -> torch.Tensor:
        """Base-model samples -> uint8 frames through the space's decoder (per-frame seeds)."""
        return self.space.decode(z, frame_seeds, self.decode_steps).cpu()


def frame_seeds(seeds: torch.Tensor, frames: range | list[int]) -> torch.Tensor:
    """(N·len(frames),) int64 seeds, clip-major: frame t of a clip with seed s gets mix_seed(s, 51000 + t)."""
    return torch.tensor([mix_seed(int(s), FRAME_STREAM * 1000 + t) for s in seeds for t in frames],
                        dtype=torch.int64)


def stack_frames(z: torch.Tensor) -> torch.Tensor:
    """(N, T, C, h, w) -> (N, T·C, h, w): frames stacked along channels."""
    return z.reshape(z.shape[0], -1, *z.shape[-2:])


def build_video_base(cfg: VideoBaseConfig, frame_shape: tuple[int, int, int], num_classes: int,
                     logsnr_max: float, pixels: bool) -> tuple[Denoiser, Schedule]:
    """Denoiser over (T−K)·C stacked future channels, cond K·C context channels, and its schedule (§6)."""
    c, h, _ = frame_shape
    patch = cfg.patch_size or (2 if pixels and h >= 32 else 1)
    net = Denoiser(cfg.future_frames * c, cfg.channels, cfg.num_blocks, cond_channels=cfg.context_frames * c,
                   emb_dim=cfg.emb_dim, num_classes=num_classes if cfg.class_conditional else 0,
                   prediction=cfg.prediction, patch_size=patch)
    shift = resolution_shift(h) if pixels else 0.0
    return net, Schedule("cosine", cfg.logsnr_min, logsnr_max, shift)


@torch.no_grad()
def clip_data(codec: FrameCodec, clips_uint8: torch.Tensor, cfg: VideoBaseConfig) -> torch.Tensor:
    """Per-frame clean data (N', T, C, h, w) of the training clips with the configured augmentations."""
    if clips_uint8.ndim != 5 or clips_uint8.shape[1] != cfg.num_frames:
        raise ValueError(f"expected uint8 clips (N, {cfg.num_frames}, 3, H, W), got {tuple(clips_uint8.shape)}; "
                         "load the dataset with num_frames=cfg.num_frames")
    views = [clips_uint8] + ([clips_uint8.flip(-1)] if cfg.hflip else [])
    out = []
    for v in views:
        frames = v.reshape(-1, *v.shape[2:])
        out.append(torch.cat([codec.clean(frames[i:i + 256]) for i in range(0, len(frames), 256)])
                   .reshape(v.shape[0], v.shape[1], -1, *codec_side(codec, v)))
    data = torch.cat(out)
    return torch.cat([data, data.flip(1)]) if cfg.time_reverse else data


def codec_side(codec: FrameCodec, clips: torch.Tensor) -> tuple[int, int]:
    """Spatial size (h, w) of one frame's base-model data."""
    return clips.shape[-2] // codec.factor, clips.shape[-1] // codec.factor


def _load(run_dir: Path, net=None, ema=None, opt=None) -> dict[str, Any]:
    return read_checkpoint(run_dir / VIDEO_BASE_CHECKPOINT, {"net": net, "ema": ema}, opt)[0]


class VideoBaseObjective:
    """Frame prediction as a loop objective: sigmoid-weighted ELBO on the future frames given the context (§6)."""

    stream, name = "video_base", "video base"

    def __init__(self, cfg: VideoBaseConfig, frame_shape: tuple[int, int, int], num_classes: int,
                 logsnr_max: float, pixels: bool):
        self.cfg, self.num_classes = cfg, num_classes
        self.args = (cfg, frame_shape, num_classes, logsnr_max, pixels)
        self.schedule = build_video_base(*self.args)[1]

    def build(self) -> Denoiser:
        """The stacked-frame UNet."""
        return build_video_base(*self.args)[0]

    def loss(self, net: Denoiser, batch: dict[str, torch.Tensor], noise) -> dict[str, torch.Tensor]:
        """Per-clip weighted loss (nats), its ELBO, and the optimised nats per dimension."""
        z, cond = batch["future"], batch["context"]
        lab = batch["label"] if self.num_classes else None
        t, eps = noise.stratified_t(), noise.randn(*z.shape[1:])
        terms = decoder_loss(lambda z_t, lam: net.eps(z_t, lam, cond, lab), z, t, eps, self.schedule,
                             self.cfg.bias_b)
        return {"loss": terms["dec"] / z[0].numel(), "dec": terms["dec"], "elbo_nats": terms["dec_elbo"]}


def train_video_base(cfg: VideoBaseConfig, run_dir: str | Path, codec: FrameCodec, clips_uint8: torch.Tensor,
                     labels: torch.Tensor, num_classes: int, resume: bool = True, progress: bool = True,
                     execution: Execution | None = None) -> dict[str, Any]:
    """Train the frame-prediction base model (sigmoid-weighted ELBO down to λ₀, UL-SPEC §6); summary dict."""
    from ulbench import dist

    run_dir = Path(run_dir)
    with dist.rank_zero_first():
        run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = clip_data(codec, clips_uint8, cfg).cpu()
    encode_s = time.perf_counter() - t0
    reps = data.shape[0] // clips_uint8.shape[0]
    labels = labels.to(torch.int64).repeat(reps)
    num_classes = num_classes if cfg.class_conditional else 0
    k = cfg.context_frames
    anchor = data[:, k - 1:k] if cfg.residual else torch.zeros_like(data[:, :1])
    context, future = stack_frames(data[:, :k]), stack_frames(data[:, k:] - anchor)
    frame_shape = tuple(data.shape[2:])
    meta = {"config": dataclasses.asdict(cfg), "config_hash": cfg.config_hash(), "codec": codec.name,
            "frame_shape": list(frame_shape), "num_classes": num_classes, "logsnr_max": codec.logsnr_max,
            "num_train_clips": int(clips_uint8.shape[0]), "num_train_examples": int(data.shape[0]),
            "data_std": float(future.std()),
            "space_config_hash": codec.space_hash}
    loop_cfg = LoopConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                          grad_clip=cfg.grad_clip, ema=cfg.ema, seed=cfg.seed, checkpoint_every=cfg.checkpoint_every,
                          log_every=50, num_threads=cfg.num_threads,
                          extra={"codec": codec.name, **{f: v for f, v in dataclasses.asdict(cfg).items()
                                                        if f not in ("steps", "checkpoint_every", "num_threads")}})
    objective = VideoBaseObjective(cfg, frame_shape, num_classes, codec.logsnr_max, codec.pixels)
    loop = Loop(objective, loop_cfg, execution, checkpoint=run_dir / VIDEO_BASE_CHECKPOINT,
                log=run_dir / "base_log.jsonl", meta=meta)
    meta["params"] = count_params(loop.net)
    if loop.lead:
        atomic_write(run_dir / VIDEO_BASE_CONFIG, lambda p: p.write_text(json.dumps(meta, indent=1)))
    out = loop.run(TensorBatches(future=future, context=context, label=labels), resume=resume, progress=progress)
    return {"run_dir": str(run_dir), "steps": cfg.steps, "samples_seen": out["samples_seen"],
            "num_train_examples": int(data.shape[0]), "encoded_frames": 0 if codec.factor == 1 else
            int(clips_uint8.shape[0] * cfg.num_frames * (2 if cfg.hflip else 1)),
            "params": out["params"], "encode_s": encode_s, "train_s": out["train_s"], "img_per_s": out["img_per_s"],
            "execution": out["execution"]}


class VideoPredictor:
    """Frame prediction: K real frames in, T−K frames sampled (per-clip seeds) and decoded (per-frame seeds)."""

    def __init__(self, run_dir: str | Path, codec: FrameCodec, steps: int = 32):
        run_dir = Path(run_dir)
        if not (run_dir / VIDEO_BASE_CHECKPOINT).exists():
            raise ValueError(f"{run_dir}: no {VIDEO_BASE_CHECKPOINT}; train the video base model first "
                             "(ul_models.video.train_video_base)")
        self.meta = json.loads((run_dir / VIDEO_BASE_CONFIG).read_text())
        if self.meta["codec"] != codec.name:
            raise ValueError(f"{run_dir}: trained on {self.meta['codec']} data, got a {codec.name} codec")
        self.cfg = VideoBaseConfig.from_dict(self.meta["config"])
        self.codec, self.steps, self.run_dir = codec, steps, str(run_dir)
        self.net, self.schedule = build_video_base(self.cfg, tuple(self.meta["frame_shape"]),
                                                   self.meta["num_classes"], self.meta["logsnr_max"], codec.pixels)
        self.trained_steps = int(_load(run_dir, ema=self.net)["step"])
        self.net.eval()
        self.precision = "fp32"

    def to(self, device: str | torch.device, precision: str | None = None) -> "VideoPredictor":
        """Predict on `device` under `precision` autocast (the codec moves too); returns self."""
        self.codec.to(device, precision)
        self.net.to(self.codec.device)
        self.precision = precision or self.precision
        return self

    @torch.no_grad()
    def predict(self, clips_uint8: torch.Tensor, labels: torch.Tensor | None, seeds: torch.Tensor,
                steps: int | None = None) -> torch.Tensor:
        """uint8 (N, T, 3, H, W): the K real context frames, then T−K predicted; clip i depends on seeds[i] only."""
        k, t_all = self.cfg.context_frames, self.cfg.num_frames
        if clips_uint8.dtype != torch.uint8 or clips_uint8.ndim != 5 or clips_uint8.shape[1] < k:
            raise ValueError(f"expected uint8 clips (N, >= {k}, 3, H, W), got {clips_uint8.dtype} "
                             f"{tuple(clips_uint8.shape)}")
        seeds = torch.as_tensor(seeds, dtype=torch.int64)
        n = clips_uint8.shape[0]
        ctx = clips_uint8[:, :k].contiguous()
        ctx_data = self.codec.clean(ctx.reshape(-1, *ctx.shape[2:])).reshape(n, k, *self.meta["frame_shape"])
        cond, anchor = stack_frames(ctx_data), ctx_data[:, k - 1]
        labelled = bool(self.meta["num_classes"])
        if labelled:
            lab = torch.as_tensor(labels if labels is not None else torch.full((n,), self.meta["num_classes"]))
            lab = lab.to(cond.device)
            cond = torch.cat([cond, lab.float()[:, None, None, None].expand(n, 1, *cond.shape[-2:])], dim=1)

        def eps_fn(z_t, lam, c):
            return self.net.eps(z_t, lam, c[:, :-1] if labelled else c, c[:, -1, 0, 0].long() if labelled else None)

        c, h, w = self.meta["frame_shape"]
        shape = (self.cfg.future_frames * c, h, w)
        clip = self.codec.target.clip
        clip = clip * (2.0 if self.cfg.residual else 1.0) if clip else None  # residuals of [−1, 1] lie in [−2, 2]
        noisy = self.codec.target.sample_is_latent
        z = sample(eps_fn, shape, seeds, self.schedule, steps or self.steps, cond=cond,
                   return_noisy=noisy, clip_x=clip, micro_batch=16, device=self.codec.device,
                   precision=self.precision)
        future = z.reshape(n, self.cfg.future_frames, c, h, w)
        if self.cfg.residual:  # UL: the sample at λ₀ is α₀·(z − anchor) + σ₀ε, so z₀ = sample + α₀·anchor
            scale = float(alpha_sigma(torch.tensor(self.meta["logsnr_max"]))[0]) if noisy else 1.0
            future = future + scale * anchor[:, None]
        future = future.reshape(n * self.cfg.future_frames, c, h, w)
        frames = self.codec.decode(future, frame_seeds(seeds, range(k, t_all)))
        return torch.cat([ctx, frames.reshape(n, self.cfg.future_frames, *frames.shape[1:])], dim=1)

    def info(self) -> dict[str, Any]:
        """Provenance of the predictor."""
        return {"generator": f"video-base[{self.codec.name}]", "base_config_hash": self.cfg.config_hash(),
                "trained_steps": self.trained_steps, "sample_steps": self.steps,
                "decode_steps": self.codec.decode_steps, "params": count_params(self.net), "run_dir": self.run_dir,
                "logsnr_max": self.meta["logsnr_max"], "sample_is_z0": self.codec.target.sample_is_latent,
                "context_frames": self.cfg.context_frames, "predicted_frames": self.cfg.future_frames}
