"""Log-SNR noise schedules of the variance-preserving process (UL-SPEC §1; VDM, simple diffusion).

A schedule maps t ∈ [0, 1] to a decreasing log-SNR λ(t): λ(0) = logsnr_max (least noise), λ(1) = logsnr_min.
Every function takes tensors and broadcasts, so a per-element `logsnr_max` (the learned-variance ablation,
UL-SPEC §7) works the same as a scalar.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCHEDULE_KINDS = ("cosine", "uniform")


def alpha_sigma(logsnr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha, sigma of a VP process from log-SNR: alpha² = sigmoid(λ), sigma² = sigmoid(−λ) (UL-SPEC §1)."""
    return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()


def resolution_shift(resolution: int, base_resolution: int = 64) -> float:
    """Log-SNR shift 2·log(base/d) of simple diffusion for a d×d image (Hoogeboom et al. 2023; UL-SPEC §4)."""
    return 2.0 * math.log(base_resolution / resolution)


def _t_of_cosine(logsnr: torch.Tensor, shift: float) -> torch.Tensor:
    """Inverse of the untruncated shifted cosine schedule: t with −2·log(tan(π t/2)) + shift = λ."""
    return (2.0 / math.pi) * torch.atan(torch.exp(-(logsnr - shift) / 2.0))


def logsnr_cosine(t: torch.Tensor, logsnr_min, logsnr_max, shift: float = 0.0) -> torch.Tensor:
    """Shifted cosine log-SNR −2·log(tan(π t/2)) + shift, truncated to [λ_min, λ_max] by affine map of t."""
    t = torch.as_tensor(t)
    lo = _t_of_cosine(torch.as_tensor(logsnr_max, dtype=t.dtype, device=t.device), shift)
    hi = _t_of_cosine(torch.as_tensor(logsnr_min, dtype=t.dtype, device=t.device), shift)
    u = lo + t * (hi - lo)
    return -2.0 * torch.log(torch.tan(0.5 * math.pi * u)) + shift


def dlogsnr_dt_cosine(t: torch.Tensor, logsnr_min, logsnr_max, shift: float = 0.0) -> torch.Tensor:
    """dλ/dt of the truncated shifted cosine schedule: −2π·(t_hi − t_lo)/sin(π u) (negative)."""
    t = torch.as_tensor(t)
    lo = _t_of_cosine(torch.as_tensor(logsnr_max, dtype=t.dtype, device=t.device), shift)
    hi = _t_of_cosine(torch.as_tensor(logsnr_min, dtype=t.dtype, device=t.device), shift)
    u = lo + t * (hi - lo)
    return -2.0 * math.pi * (hi - lo) / torch.sin(math.pi * u)


def logsnr_uniform(t: torch.Tensor, logsnr_min, logsnr_max) -> torch.Tensor:
    """Uniform-in-λ schedule λ(t) = λ_max + t·(λ_min − λ_max)."""
    t = torch.as_tensor(t)
    return logsnr_max + t * (torch.as_tensor(logsnr_min, dtype=t.dtype, device=t.device) - logsnr_max)


def dlogsnr_dt_uniform(t: torch.Tensor, logsnr_min, logsnr_max) -> torch.Tensor:
    """dλ/dt = λ_min − λ_max of the uniform-in-λ schedule (constant, negative)."""
    t = torch.as_tensor(t)
    diff = (torch.as_tensor(logsnr_min, dtype=t.dtype, device=t.device)
            - torch.as_tensor(logsnr_max, dtype=t.dtype, device=t.device))
    return diff * torch.ones_like(t)


@dataclass(frozen=True)
class Schedule:
    """A truncated log-SNR schedule λ(t) on [logsnr_min, logsnr_max] (UL-SPEC §1)."""

    kind: str = "cosine"  # "cosine" (shifted, truncated) or "uniform" (in λ)
    logsnr_min: float = -10.0  # λ(1), most noise
    logsnr_max: float = 10.0  # λ(0), least noise
    shift: float = 0.0  # cosine only: added to λ before truncation (resolution shift of simple diffusion)

    def __post_init__(self):
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"schedule kind {self.kind!r} is unknown; expected one of {SCHEDULE_KINDS}")
        if not self.logsnr_min < self.logsnr_max:
            raise ValueError(
                f"schedule needs logsnr_min < logsnr_max, got [{self.logsnr_min}, {self.logsnr_max}]; "
                "swap them or widen the range"
            )

    def logsnr(self, t: torch.Tensor, logsnr_max: torch.Tensor | float | None = None) -> torch.Tensor:
        """λ(t); `logsnr_max` overrides the start point (per element for learned variance)."""
        top = self.logsnr_max if logsnr_max is None else logsnr_max
        if self.kind == "cosine":
            return logsnr_cosine(t, self.logsnr_min, top, self.shift)
        return logsnr_uniform(t, self.logsnr_min, top)

    def dlogsnr_dt(self, t: torch.Tensor, logsnr_max: torch.Tensor | float | None = None) -> torch.Tensor:
        """dλ/dt at t (negative); the continuous ELBO weights ‖ε − ε̂‖² by −dλ/dt (VDM eq. 17)."""
        top = self.logsnr_max if logsnr_max is None else logsnr_max
        if self.kind == "cosine":
            return dlogsnr_dt_cosine(t, self.logsnr_min, top, self.shift)
        return dlogsnr_dt_uniform(t, self.logsnr_min, top)
