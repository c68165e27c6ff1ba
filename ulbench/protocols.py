"""LatentSpace, Generator and Metric protocols (ARCHITECTURE.md; edm2 `training/encoders.py`, mteb)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch


@dataclass
class Reconstruction:
    """What a latent space returns for a batch: uint8 NCHW images and per-image bits by variant."""

    x_hat: torch.Tensor  # uint8 (N, 3, H, W)
    bits: dict[str, np.ndarray] | None = None  # variant -> float64 bits per image, e.g. {"total": ..., "entropy": ...}
    bits_stderr: dict[str, np.ndarray] | None = None  # optional per-image standard error of a stochastic bound
    z: Any = None  # optional: the latents `encode` gives for these images (saves measuring code a second encode)


@runtime_checkable
class LatentSpace(Protocol):
    """A latent space: uint8 images in, latents, uint8 images out (ARCHITECTURE.md §Core abstractions)."""

    name: str

    def encode(self, x_uint8: torch.Tensor, seeds: torch.Tensor) -> Any:
        """Encode uint8 NCHW images; `seeds` (int64, one per image) fix any noise drawn."""

    def decode(self, z: Any, seeds: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Decode latents to uint8 NCHW images; sampling noise depends only on each image's seed."""

    def reconstruct(self, x_uint8: torch.Tensor, seeds: torch.Tensor) -> Reconstruction:
        """Encode, decode and measure bits of a batch in one pass."""

    def info(self) -> dict[str, Any]:
        """Latent shape, downsampling factor, parameter count and provenance of this space."""


@runtime_checkable
class Generator(Protocol):
    """A generative model: per-sample seeds to uint8 images (edm2 `StackedRandomGenerator`)."""

    name: str

    def sample(self, seeds: torch.Tensor, steps: int | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Draw one uint8 NCHW sample per seed; output i depends only on seeds[i] and labels[i]."""

    def info(self) -> dict[str, Any]:
        """Parameters and provenance of this generator."""


@dataclass
class Batch:
    """One evaluation batch: dataset indices, real images and what the system produced for them."""

    indices: np.ndarray  # int64 dataset indices (the unit of sharding and seeding)
    x_real: torch.Tensor | None = None  # uint8 NCHW
    x_fake: torch.Tensor | None = None  # uint8 NCHW (reconstructions or samples)
    bits: dict[str, np.ndarray] | None = None
    bits_stderr: dict[str, np.ndarray] | None = None
    cache: dict[str, Any] = field(default_factory=dict)  # detector features, computed once per batch

    @staticmethod
    def feature_key(detector: Any, which: str) -> str:
        """Cache key of one detector's features of the real or fake images."""
        return f"{detector.name}:{id(detector)}:{which}"

    def features(self, detector: Any, which: str) -> np.ndarray:
        """Features of x_real or x_fake ("real" / "fake") by `detector`, computed once and shared by metrics."""
        key = self.feature_key(detector, which)
        if key not in self.cache:
            x = self.x_real if which == "real" else self.x_fake
            self.cache[key] = detector.features(x)
        return self.cache[key]


@dataclass
class MetricValue:
    """A computed metric: value, standard error, sample count and notes for provenance; `failed` (a reason) when
    the value cannot be trusted (non-finite inputs or result): its row gets status "failed", never "ok"."""

    value: float
    stderr: float | None = None
    n: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    failed: str | None = None


class NonFiniteOutput(ValueError):
    """A network (decoder, base model, prior) produced NaN/inf: nothing measured from it is a number."""

    def __init__(self, source: str, num_bad: int, num_total: int, what: str = "values"):
        self.source = source
        super().__init__(f"{source} produced non-finite output (NaN/inf in {num_bad} of {num_total} {what}); "
                         f"nothing was measured from it (check the weights or the training run that wrote them)")


def require_finite(x: torch.Tensor, source: str) -> torch.Tensor:
    """The one check before float outputs become uint8 images (where NaN would turn into plausible pixels):
    returns x, or raises NonFiniteOutput naming `source` (e.g. "decoder of ul:runs/x")."""
    if x.device.type == "meta":  # shapes without values (device-placement tests): nothing to check
        return x
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        per_item = finite.flatten(1).all(1) if x.ndim > 1 else finite
        raise NonFiniteOutput(source, int((~per_item).sum()), int(per_item.numel()),
                              "outputs" if x.ndim > 1 else "values")
    return x


class Metric(Protocol):
    """A metric with additive state that merges across batches, shards and ranks (torchmetrics, edm2)."""

    name: str
    higher_is_better: bool
    needs: frozenset[str]  # subset of {"real", "fake", "bits"}

    def update(self, batch: Batch) -> None:
        """Add one batch to the state."""

    def merge(self, other: "Metric") -> None:
        """Add another shard's state into this one."""

    def compute(self) -> MetricValue:
        """Turn the accumulated state into a value."""

    def provenance(self) -> dict[str, Any]:
        """What produced the number (detector, weights hash, resize, ...)."""
