"""Unified Latents as a ulbench LatentSpace: uint8 NCHW in and out, bits from the prior bound (UL-SPEC §2-4).

Registered as `ul:RUN_DIR` (ulbench/registry.py). All noise is drawn from per-image seeds on CPU generators and
moved to the space's device, and every network runs on fixed-size micro-batches, so results are identical whatever
the batch size and agree across devices up to float rounding. Inputs may live anywhere; images, latents and bits come
back on the CPU (`*_on_device` keep tensors on the device).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ul_models.config import ULConfig
from ul_models.losses import mix_seed
from ul_models.model import UnifiedLatents, build_stage1
from ul_models.schedule import alpha_sigma
from ul_models.seeds import STREAMS
from ul_models.train import CHECKPOINT, load_checkpoint, to_uint8, to_unit
from ulbench.device import Execution, check_precision, resolve_device
from ulbench.spaces import DiffusionTarget, SpaceInfo, total_params

ENCODER_STREAM = STREAMS["encoder"]  # seed stream of the encoder noise ε in z₀ = α₀ z_clean + σ₀ ε
BITS_STREAM = STREAMS["bits"]  # seed stream of the (t, ε) draws of the bits estimate
NOISE_STREAM = STREAMS["label_noise"]  # channel noise re-drawn for learned-variance stage-2 samples


def _check_uint8(x: torch.Tensor, seeds: torch.Tensor) -> None:
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(
            f"expected uint8 images (N, 3, H, W), got {x.dtype} {tuple(x.shape)}; "
            "convert with (x * 255).round().to(torch.uint8)"
        )
    if len(seeds) != x.shape[0]:
        raise ValueError(f"need one seed per image: {len(seeds)} seeds for {x.shape[0]} images")


class ULSpace:
    """LatentSpace of a trained stage-1 run: encode → z₀, decode → x̂, bits = L_prior/ln 2 (UL-SPEC §3)."""

    name = "ul"

    def __init__(
        self,
        model: UnifiedLatents,
        cfg: ULConfig,
        run_dir: str,
        decode_steps: int,
        bits_draws: int,
        trained_steps: int,
        micro_batch: int = 16,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
    ):
        self.model = model.eval()  # EMA weights
        self.cfg = cfg
        self.run_dir = run_dir
        self.decode_steps = decode_steps  # DDIM steps of the decoder sampler
        self.bits_draws = bits_draws  # (t, ε) draws per image of the bits estimate
        self.trained_steps = trained_steps
        self.micro_batch = micro_batch  # fixed network batch (last chunk padded): batch-size invariance
        self.device, self.precision = torch.device("cpu"), "fp32"
        self.to(device, precision)

    def to(self, device: str | torch.device, precision: str | None = None) -> "ULSpace":
        """Move the networks to `device` (and set the autocast precision); returns self."""
        self.device = resolve_device(device)
        self.precision = check_precision(precision or self.precision)
        self.model.to(self.device)
        return self

    def _clean(self, x_uint8: torch.Tensor):
        x = to_unit(x_uint8.to(self.device, non_blocking=True))
        return self.model.encode_batched(x, self.micro_batch, self.precision)

    def _latents(self, x_uint8: torch.Tensor, seeds: torch.Tensor):
        z_clean, logsnr_e = self._clean(x_uint8)
        noise = torch.stack(
            [
                torch.randn(
                    z_clean.shape[1:],
                    generator=torch.Generator().manual_seed(mix_seed(int(s), ENCODER_STREAM)),
                )
                for s in seeds
            ]
        ).to(self.device, non_blocking=True)  # drawn on CPU: the same ε on every device
        return z_clean, logsnr_e, self.model.noisy_latent(z_clean, logsnr_e, noise)

    @torch.no_grad()
    def encode_on_device(self, x_uint8: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """`encode` without the copy back: float32 latents on the space's device."""
        _check_uint8(x_uint8, seeds)
        _, logsnr_e, z0 = self._latents(x_uint8, seeds)
        return z0 if logsnr_e is None else torch.cat([z0, logsnr_e], dim=1)

    @torch.no_grad()
    def encode(self, x_uint8: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """z₀ = α₀·E(x) + σ₀·ε, ε from each image's seed; learned variance appends the λ_e map (CPU float32)."""
        return self.encode_on_device(x_uint8, seeds).cpu()

    @torch.no_grad()
    def decode_on_device(self, z: torch.Tensor, seeds: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Decoder sampler (DDIM in λ) from z₀ to x̂ ∈ [−1, 1], float32 on the space's device (UL-SPEC §6)."""
        c = self.cfg.latent_channels
        if z.ndim != 4 or z.shape[1] != (2 * c if self.cfg.learned_variance else c):
            raise ValueError(f"expected latents (N, {c}, h, w) from encode(), got {tuple(z.shape)}")
        if len(seeds) != z.shape[0]:
            raise ValueError(f"need one seed per latent: {len(seeds)} seeds for {z.shape[0]} latents")
        z = z.to(self.device, torch.float32, non_blocking=True)
        z0, logsnr_e = (z, None) if not self.cfg.learned_variance else (z[:, :c], z[:, c:])
        return self.model.decode(z0, logsnr_e, torch.as_tensor(seeds), steps or self.decode_steps,
                                 micro_batch=self.micro_batch, precision=self.precision)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, seeds: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Decoder sampler (DDIM in λ, `steps` or the default) from z₀ to uint8 NCHW images on CPU (UL-SPEC §6)."""
        return to_uint8(self.decode_on_device(z, seeds, steps), f"decoder of ul:{self.run_dir}").cpu()

    @torch.no_grad()
    def bits(self, x_uint8: torch.Tensor, seeds: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Per-image bits (float64) and standard error of the prior bound L_prior/ln 2 (UL-SPEC §3)."""
        _check_uint8(x_uint8, seeds)
        z_clean, logsnr_e = self._clean(x_uint8)
        return self._bits(z_clean, logsnr_e, seeds)

    def _bits(self, z_clean, logsnr_e, seeds) -> tuple[np.ndarray, np.ndarray]:
        bit_seeds = torch.tensor([mix_seed(int(s), BITS_STREAM) for s in seeds], dtype=torch.int64)
        nats, nats_se = self.model.prior_nats(z_clean, logsnr_e, bit_seeds, self.bits_draws, self.precision)
        return nats / math.log(2.0), nats_se / math.log(2.0)

    @torch.no_grad()
    def reconstruct(self, x_uint8: torch.Tensor, seeds: torch.Tensor):
        """Encode, decode and measure bits in one pass: Reconstruction(x_hat, bits={"total"}, bits_stderr)."""
        from ulbench.protocols import Reconstruction

        _check_uint8(x_uint8, seeds)
        z_clean, logsnr_e, z0 = self._latents(x_uint8, seeds)
        x_hat = to_uint8(self.model.decode(z0, logsnr_e, torch.as_tensor(seeds), self.decode_steps,
                                           micro_batch=self.micro_batch, precision=self.precision),
                         f"decoder of ul:{self.run_dir}").cpu()
        bits, bits_se = self._bits(z_clean, logsnr_e, seeds)
        # UL's rate is its own UL bound: reported under both names so every space has a comparable "ul_bound"
        return Reconstruction(x_hat=x_hat, bits={"total": bits, "ul_bound": bits},
                              bits_stderr={"total": bits_se, "ul_bound": bits_se})

    def info(self) -> SpaceInfo:
        """Latent shape, downsampling factor, parameters and provenance (config hash, run dir, steps)."""
        m, c, f = self.model, self.cfg.latent_channels, self.cfg.downsample_factor
        return SpaceInfo(
            name=self.name, latent_channels=c, downsample_factor=f,
            params=total_params({"encoder": m.encoder, "prior": m.prior, "decoder": m.decoder}),
            stochastic_decoder=True, decoder_evals=self.decode_steps, rate="ul_bound",
            latent_shape=tuple(self.cfg.latent_shape),
            provenance={"class": "UnifiedLatents", "config_hash": self.cfg.config_hash(), "run_dir": self.run_dir,
                        "trained_steps": self.trained_steps, "weights": "EMA",
                        "checkpoint": CHECKPOINT, "checkpoint_sha256": getattr(self, "checkpoint_sha256", None),
                        **({"precision": self.precision} if self.precision != "fp32" else {})},
            details={"decode_steps": self.decode_steps, "bits_draws": self.bits_draws,
                     "bits_bound": "L_prior (UL-SPEC §3)",
                     "latent_channels_layout": "z0 then lambda_e map" if self.cfg.learned_variance else "z0",
                     "config": self.cfg.to_dict()})

    def diffusion_target(self) -> DiffusionTarget:
        """Stage-2 data is z_clean down to λ₀, so its sample at λ₀ is z₀ (UL-SPEC §6); learned variance appends
        (λ_e − λ₀)/10 and re-noises through the channel before decoding."""
        if not self.cfg.learned_variance:
            return DiffusionTarget(data=self._target_data, logsnr_max=float(self.model.lambda0),
                                   sample_is_latent=True, note="z_clean to lambda0: the sample at lambda0 is z0")
        return DiffusionTarget(data=self._target_data, to_latent=self._renoise,
                               note="[z_clean, (lambda_e - lambda0)/10] to logsnr 10, re-noised before decoding")

    @torch.no_grad()
    def _target_data(self, x_uint8: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        z_clean, logsnr_e = self._clean(x_uint8)
        if logsnr_e is None:
            return z_clean
        return torch.cat([z_clean, (logsnr_e - self.model.lambda0) / 10.0], dim=1)

    def _renoise(self, z: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        model, c = self.model, self.model.latent_channels
        logsnr_e = (model.lambda0 + 10.0 * z[:, c:]).clamp(model.prior_schedule.logsnr_min, model.lambda0)
        noise = torch.stack([torch.randn((c, *z.shape[2:]),
                                         generator=torch.Generator().manual_seed(mix_seed(int(s), NOISE_STREAM)))
                             for s in seeds]).to(z.device)
        alpha, sigma = alpha_sigma(logsnr_e)
        return torch.cat([alpha * z[:, :c] + sigma * noise, logsnr_e], dim=1)

    def flop_components(self, resolution: int | None = None) -> list[tuple[str, torch.nn.Module, tuple]]:
        """Encoder, prior and decoder with one-image example inputs on the space's device (fvcore)."""
        from ulbench.costs import ul_model_components

        comps = ul_model_components(self.model, self.cfg)
        return [(name, module, tuple(t.to(self.device) for t in inputs)) for name, (module, inputs) in comps.items()]

    @torch.no_grad()
    def sample_prior(self, seeds: torch.Tensor, steps: int) -> torch.Tensor:
        """z₀ from the jointly trained prior (λ_min → λ₀), one per seed (UL-SPEC §7 "single stage")."""
        from ul_models.sampler import sample

        if self.cfg.learned_variance:
            raise ValueError("single-stage generation needs a UL space with a fixed-variance encoder")
        model, c, f, d = self.model, self.cfg.latent_channels, self.cfg.downsample_factor, self.cfg.resolution
        return sample(lambda z_t, lam, _c: model.prior.eps(z_t, lam), (c, d // f, d // f),
                      torch.as_tensor(seeds, dtype=torch.int64), model.prior_schedule, steps, return_noisy=True,
                      micro_batch=16, device=self.device, precision=self.precision)


def load_ul_space(run_dir: str, steps: int | None = None, bits_draws: int = 64, device: str | torch.device = "cpu",
                  precision: str = "fp32", execution: Execution | None = None, **_: Any) -> ULSpace:
    """Load a stage-1 run's EMA weights as a LatentSpace (`ul:RUN_DIR`) on `device` (or `execution`'s)."""
    path = Path(run_dir)
    if not (path / "config.json").exists() or not (path / CHECKPOINT).exists():
        raise ValueError(
            f"{run_dir} is not a UL run directory (needs config.json and {CHECKPOINT}); "
            "train one with ul_models.train.train_stage1 or `ulbench train ul`."
        )
    if bits_draws < 2:
        raise ValueError(f"bits_draws must be >= 2 (for a standard error), got {bits_draws}; use e.g. 64")
    cfg = ULConfig.from_dict(json.loads((path / "config.json").read_text()))
    model = build_stage1(cfg)
    state = load_checkpoint(path, ema=model)
    if execution is not None:
        device, precision = execution.torch_device, execution.precision
    space = ULSpace(model, cfg, str(run_dir), int(steps or cfg.decode_steps), int(bits_draws), int(state["step"]),
                    device=device, precision=precision)
    space.checkpoint_sha256 = state["checkpoint_sha256"]  # the file's bytes, for every row's provenance
    return space
