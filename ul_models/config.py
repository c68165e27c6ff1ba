"""Stage-1 configuration of Unified Latents: one frozen dataclass, presets by scale (UL-SPEC §5, §7)."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import warnings
from dataclasses import dataclass
from typing import Any

DATA_NAMES = ("embedded", "embedded-textures")  # plus "folder:DIR"


@dataclass(frozen=True)
class ULConfig:
    """Everything that defines a stage-1 run; `config_hash()` names it (UL-SPEC §2-5, §7 switches)."""

    scale: str = "tiny"  # preset this config started from: tiny | small | paper
    # --- images and latents
    resolution: int = 32  # image side d (d×d pixels)
    latent_channels: int = 4  # C of z (§7 sweep axis)
    downsample_factor: int = 4  # f: latents are (C, d/f, d/f) (§7 sweep axis)
    data: str = "embedded"  # training data: embedded | embedded-textures | folder:DIR (§7 "other data")
    hflip: bool = True  # random horizontal flips of training images
    # --- latent channel and prior (§2-3)
    lambda0: float = (
        5.0  # λ₀: log-SNR of the fixed encoder noise, the prior's minimum noise (§7 "noisy latents")
    )
    lambda_min: float = -10.0  # λ_min of the prior schedule (t = 1)
    prior_schedule: str = "cosine"  # cosine | uniform (moves variance only)
    separate_prior: bool = False  # §7: prior trains on stop-gradient latents
    separate_prior_rate: str = "none"  # §7 reading: none (a: no rate on the encoder) | gaussian_kl (b) [ours]
    learned_variance: bool = False  # §7: encoder outputs per-element λ_e ≤ λ₀
    # --- decoder (§4)
    pixel_logsnr_min: float = -10.0  # λ_min,x
    pixel_logsnr_max: float = 10.0  # λ_max,x
    pixel_resolution_shift: bool = True  # add 2·log(64/d) to the cosine schedule [ours: default on]
    c_lf: float = 10.0  # loss factor on L_dec; must exceed 1 for a non-zero rate (§5)
    bias_b: float = 0.0  # sigmoid weighting bias b of w(λ) = sigmoid(b − λ) [ours: default 0]
    decoder_prediction: str = "v"  # v head (≈23 dB vs 13 dB for ε at equal budget, §5)
    prior_prediction: str = "eps"  # ε head is fine on 8×8 latents
    # --- networks (channels per resolution level)
    encoder_channels: tuple[int, ...] = (24, 48)  # level i at d/(patch·2^i); extra levels repeat the last
    encoder_patch_size: int = 2  # pixel-unshuffle stem of the encoder
    prior_channels: tuple[int, ...] = (32, 48)  # latent UNet levels
    decoder_channels: tuple[int, ...] = (32, 64)  # pixel UNet levels (after the patch stem)
    decoder_patch_size: int = 2  # pixel-unshuffle in / pixel-shuffle out of the decoder UNet
    num_blocks: int = 1  # residual blocks per level
    emb_dim: int = 64  # log-SNR embedding width
    # --- optimisation
    steps: int = 1000  # training steps
    batch_size: int = 64  # images per step
    lr: float = 2e-3  # AdamW peak learning rate
    warmup_steps: int = 50  # linear warm-up steps
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    grad_clip: float = 1.0  # global gradient-norm clip
    ema: float = 0.99  # EMA decay of weights (evaluated and saved for use)
    seed: int = 0  # all training randomness derives from (seed, step)
    # --- evaluation and checkpoints
    eval_every: int = 250  # steps between evaluations (bpp, PSNR) in log.jsonl
    checkpoint_every: int = 250  # steps between atomic checkpoints
    eval_images: int = 64  # eval-split images used at each evaluation
    eval_draws: int = 16  # (t, ε) draws per image for the eval bpp estimate
    decode_steps: int = 32  # DDIM steps of the decoder sampler
    num_threads: int = 2  # torch intra-op threads

    def __post_init__(self):
        def bad(what: str, expected: str, hint: str) -> ValueError:
            return ValueError(f"ULConfig: {what}; expected {expected}. {hint}")

        f = self.downsample_factor
        if f < 1 or f & (f - 1):
            raise bad(f"downsample_factor={f}", "a power of two (1, 2, 4, 8, ...)", "Try 4 or 8.")
        if self.resolution % f:
            raise bad(
                f"resolution={self.resolution} is not divisible by downsample_factor={f}",
                "resolution % downsample_factor == 0",
                "Change one of them.",
            )
        if not self.lambda_min < self.lambda0:
            raise bad(
                f"lambda_min={self.lambda_min} >= lambda0={self.lambda0}",
                "lambda_min < lambda0",
                "The prior runs from lambda0 (t=0) down to lambda_min (t=1); use e.g. lambda_min=-10.",
            )
        if not self.pixel_logsnr_min < self.pixel_logsnr_max:
            raise bad("pixel_logsnr_min >= pixel_logsnr_max", "a non-empty range", "Use e.g. -10 and 10.")
        if self.separate_prior_rate not in ("none", "gaussian_kl"):
            raise bad(f"separate_prior_rate={self.separate_prior_rate!r}", "'none' or 'gaussian_kl'",
                      "gaussian_kl charges the encoder KL(N(a0 z, s0^2) || N(0, I)) in closed form.")
        if self.separate_prior_rate != "none" and not self.separate_prior:
            raise bad("separate_prior_rate without separate_prior", "separate_prior=True",
                      "The rate term replaces the prior's gradient into the encoder; set both.")
        if self.c_lf <= 0:
            raise bad(
                f"c_lf={self.c_lf}", "c_lf > 1 (default 10)", "c_lf scales the decoder loss (UL-SPEC §5)."
            )
        if self.c_lf <= 1:
            warnings.warn(
                f"c_lf={self.c_lf} <= 1: UL-SPEC §5 predicts a collapsed latent (≈0 bpp); "
                "use c_lf > 1 (default 10) unless this is the ablation",
                stacklevel=3,
            )
        if self.data not in DATA_NAMES and not self.data.startswith("folder:"):
            close = difflib.get_close_matches(self.data, DATA_NAMES, n=1)
            raise bad(
                f"data={self.data!r}",
                f"one of {DATA_NAMES} or 'folder:DIR'",
                f"Did you mean {close[0]!r}?" if close else "See `ulbench ls`.",
            )
        for name in ("decoder_prediction", "prior_prediction"):
            if getattr(self, name) not in ("eps", "v"):
                raise bad(
                    f"{name}={getattr(self, name)!r}", "'eps' or 'v'", "The decoder works best with 'v'."
                )
        if self.prior_schedule not in ("cosine", "uniform"):
            raise bad(f"prior_schedule={self.prior_schedule!r}", "'cosine' or 'uniform'", "Use 'cosine'.")
        latent_side = self.resolution // f
        if self.encoder_patch_size < 1 or f % self.encoder_patch_size:
            raise bad(
                f"encoder_patch_size={self.encoder_patch_size}",
                f"a divisor of downsample_factor={f}",
                "Use 1 or 2.",
            )
        if self.decoder_patch_size < 1 or self.resolution % self.decoder_patch_size:
            raise bad(
                f"decoder_patch_size={self.decoder_patch_size}", "a divisor of the resolution", "Use 1 or 2."
            )
        for name, side in (
            ("decoder_channels", self.resolution // self.decoder_patch_size),
            ("prior_channels", latent_side),
        ):
            levels = len(getattr(self, name))
            if levels < 1 or side % 2 ** (levels - 1):
                raise bad(
                    f"{name} has {levels} levels for a {side}×{side} input",
                    f"side divisible by 2^(levels-1) = {2 ** max(levels - 1, 0)}",
                    "Use fewer levels.",
                )
        if not 0.0 <= self.ema < 1.0:
            raise bad(f"ema={self.ema}", "0 <= ema < 1", "Use e.g. 0.99.")
        for name in (
            "steps",
            "batch_size",
            "eval_every",
            "checkpoint_every",
            "eval_images",
            "decode_steps",
            "num_threads",
            "num_blocks",
        ):
            if getattr(self, name) < 1:
                raise bad(f"{name}={getattr(self, name)}", "a positive integer", "")
        if self.eval_draws < 2:
            raise bad(f"eval_draws={self.eval_draws}", ">= 2 (for a standard error)", "Use e.g. 16.")

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, d/f, d/f) of z₀."""
        side = self.resolution // self.downsample_factor
        return (self.latent_channels, side, side)

    def encoder_levels(self) -> tuple[int, ...]:
        """Encoder channels per level: log2(f/patch)+1 levels (`encoder_channels` cut or extended)."""
        n = round(math.log2(self.downsample_factor // self.encoder_patch_size)) + 1
        chans = tuple(self.encoder_channels)
        return chans[:n] + (chans[-1],) * max(0, n - len(chans))

    @classmethod
    def preset(cls, scale: str = "tiny", **overrides: Any) -> ULConfig:
        """A preset (tiny | small | paper) with keyword overrides; unknown names raise ValueError."""
        if scale not in PRESETS:
            close = difflib.get_close_matches(scale, PRESETS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"Unknown scale {scale!r}; expected one of {tuple(PRESETS)}.{hint}")
        names = {f.name for f in dataclasses.fields(cls)}
        for key in overrides:
            if key not in names:
                raise ValueError(_unknown_key(key, names))
        return cls(**{**PRESETS[scale], "scale": scale, **overrides})

    def replace_from_strings(self, assignments: list[str]) -> ULConfig:
        """A copy with "key=value" strings applied, each parsed to the field's type (`--set` on the CLI)."""
        names = {f.name for f in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for item in assignments:
            if "=" not in item:
                raise ValueError(f"Override {item!r} is not 'key=value'; e.g. 'c_lf=30'.")
            key, value = (s.strip() for s in item.split("=", 1))
            if key not in names:
                raise ValueError(_unknown_key(key, names))
            changes[key] = _parse_like(getattr(self, key), value, key)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ULConfig:
        """Inverse of `to_dict`; unknown keys raise ValueError."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        for key in data:
            if key not in names:
                raise ValueError(_unknown_key(key, set(names)))
        defaults = cls()
        return cls(**{k: tuple(v) if isinstance(getattr(defaults, k), tuple) else v for k, v in data.items()})

    def config_hash(self) -> str:
        """First 12 hex digits of sha256 over the canonical JSON of `to_dict()`."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _unknown_key(key: str, names: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(names), n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"Unknown ULConfig field {key!r}.{hint} Known fields: {', '.join(sorted(names))}."


def _parse_like(default: Any, value: str, key: str) -> Any:
    """Parse `value` to the type of `default` (bool, int, float, str, tuple of ints)."""
    try:
        if isinstance(default, bool):
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, tuple):
            return tuple(int(v) for v in value.strip("()[] ").split(",") if v.strip())
        return value
    except ValueError:
        kind = "comma-separated ints" if isinstance(default, tuple) else type(default).__name__
        raise ValueError(
            f"Cannot parse {key}={value!r}: expected {kind} (like the default {default!r})."
        ) from None


PRESETS: dict[str, dict[str, Any]] = {
    # CPU, embedded photos, ~0.5M parameters; 1000 steps in a few minutes on 2 cores (ENVIRONMENT.md)
    "tiny": {},
    # one GPU, hours [ours]: 128 px, 16×16×8 latents
    "small": dict(
        resolution=128,
        downsample_factor=8,
        latent_channels=8,
        encoder_channels=(64, 128, 256, 256),
        prior_channels=(128, 256, 256),
        decoder_channels=(64, 128, 256, 256, 256),
        num_blocks=2,
        emb_dim=256,
        steps=200_000,
        batch_size=64,
        lr=2e-4,
        warmup_steps=1000,
        ema=0.999,
        eval_every=5000,
        checkpoint_every=5000,
        eval_draws=64,
        decode_steps=64,
    ),
    # ImageNet-512 → 32×32 latents (f = 16); channel counts are ours [ours], built on CPU for FLOP counts only
    "paper": dict(
        resolution=512,
        downsample_factor=16,
        latent_channels=32,
        encoder_channels=(128, 128, 256, 256, 512),
        prior_channels=(256, 512, 512),
        decoder_channels=(128, 128, 256, 256, 512, 512),
        num_blocks=2,
        emb_dim=512,
        steps=500_000,
        batch_size=256,
        lr=1e-4,
        warmup_steps=10_000,
        ema=0.9999,
        eval_every=10_000,
        checkpoint_every=10_000,
        eval_draws=64,
        decode_steps=64,
    ),
}
