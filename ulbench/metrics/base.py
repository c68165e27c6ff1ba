"""Metric base: additive float64 state (dict of arrays) that merges by addition across batches, shards, ranks."""

from __future__ import annotations

from typing import Any

import numpy as np

from ulbench.protocols import Batch, MetricValue


class AdditiveMetric:
    """A metric whose whole state is a dict of float64 arrays combined by `+` (edm2, torchmetrics)."""

    name = "metric"
    label = "metric"
    higher_is_better = False
    needs: frozenset[str] = frozenset()
    modality = "image"  # "video": measured on clips by the video suite, not by `ulbench eval`

    def __init__(self) -> None:
        self.state: dict[str, np.ndarray] = self.init_state()

    def init_state(self) -> dict[str, np.ndarray]:
        """Zero state."""
        raise NotImplementedError

    def update(self, batch: Batch) -> None:
        """Add one batch to the state."""
        raise NotImplementedError

    def merge(self, other: "AdditiveMetric") -> None:
        """Add another shard's state (exact: sums of float64)."""
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        for k, v in other.state.items():
            self.state[k] = self.state[k] + v

    def compute(self) -> dict[str, MetricValue]:
        """Row name -> value (most metrics give one row named after themselves)."""
        raise NotImplementedError

    def provenance(self) -> dict[str, Any]:
        """What produced the number."""
        return {}


class PerImageMean(AdditiveMetric):
    """Mean of a per-image score with its standard error across images (sum, sum of squares, count)."""

    def init_state(self) -> dict[str, np.ndarray]:
        """Zero sums."""
        return {"sum": np.zeros(1), "sumsq": np.zeros(1), "n": np.zeros(1), "nonfinite": np.zeros(1)}

    def add_scores(self, scores: np.ndarray) -> None:
        """Add per-image scores (float64); NaN/inf scores are counted (the value then fails), not summed."""
        s = np.asarray(scores, dtype=np.float64)
        bad = ~np.isfinite(s)
        self.state["nonfinite"] = self.state.get("nonfinite", np.zeros(1)) + bad.sum()
        s = np.where(bad, 0.0, s)
        self.state["sum"] += s.sum()
        self.state["sumsq"] += (s * s).sum()
        self.state["n"] += s.size

    def mean_stderr(self) -> tuple[float, float | None, int]:
        """Mean, standard error of the mean, count."""
        n = int(self.state["n"][0])
        if n == 0:
            raise ValueError(f"{self.name}: no images were evaluated")
        mean = float(self.state["sum"][0] / n)
        if n < 2 or not np.isfinite(mean):
            return mean, None, n
        var = max(float(self.state["sumsq"][0] / n - mean * mean), 0.0) * n / (n - 1)
        return mean, float(np.sqrt(var / n)), n

    def failure(self) -> str | None:
        """Why the mean cannot be trusted (per-image scores that were NaN/inf), else None."""
        bad, n = int(self.state.get("nonfinite", np.zeros(1))[0]), int(self.state["n"][0])
        return f"{self.name} was NaN/inf for {bad} of {n} images" if bad else None

    def compute(self) -> dict[str, MetricValue]:
        """One row: mean ± stderr."""
        mean, se, n = self.mean_stderr()
        return {self.name: MetricValue(mean, se, n, failed=self.failure())}
