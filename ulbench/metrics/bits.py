"""Bits per pixel from a latent space's own bit counts (UL-SPEC §3: bpp = bits / (H·W), pixels not subpixels)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ulbench.metrics.base import AdditiveMetric
from ulbench.protocols import Batch, MetricValue

COLLAPSE_BPP = 0.005  # below this a learned latent carries (almost) nothing: UL-SPEC §5


class BitsPerPixel(AdditiveMetric):
    """Mean bits per pixel of each bit variant the space reports ("total" -> bpp, "entropy" -> bpp_entropy)."""

    name, label, higher_is_better = "bpp", "bits/pixel", False
    needs = frozenset({"bits"})

    def __init__(self, **_: Any):
        super().__init__()

    def init_state(self) -> dict[str, np.ndarray]:
        """Sums are created lazily per variant; `pixels` counts H·W per image."""
        return {"n": np.zeros(1)}

    def update(self, batch: Batch) -> None:
        """Add per-image bits/pixel of every variant."""
        if batch.bits is None:
            raise ValueError("this space reports no bits; drop 'bpp' from --metrics")
        h, w = batch.x_real.shape[-2:]
        self.state["n"] += len(batch.indices)
        for variant, bits in batch.bits.items():
            bpp = np.asarray(bits, dtype=np.float64) / (h * w)
            bad = ~np.isfinite(bpp)  # counted (additive), never summed: the row fails instead of reading nan
            self.state[f"{variant}_nonfinite"] = self.state.get(f"{variant}_nonfinite", np.zeros(1)) + bad.sum()
            bpp = np.where(bad, 0.0, bpp)
            for key, val in ((f"{variant}_sum", bpp.sum()), (f"{variant}_sumsq", (bpp * bpp).sum())):
                self.state[key] = self.state.get(key, np.zeros(1)) + val
            if batch.bits_stderr and variant in batch.bits_stderr:
                se = np.asarray(batch.bits_stderr[variant], dtype=np.float64) / (h * w)
                self.state[f"{variant}_estvar"] = self.state.get(f"{variant}_estvar", np.zeros(1)) + (se * se).sum()

    def merge(self, other: "AdditiveMetric") -> None:
        """Add another shard's sums (variants may appear in only one shard's state so far)."""
        for k, v in other.state.items():
            self.state[k] = self.state.get(k, np.zeros_like(v)) + v

    def compute(self) -> dict[str, MetricValue]:
        """bpp (and bpp_<variant>) with the standard error across images."""
        n = int(self.state["n"][0])
        if n == 0:
            raise ValueError("bpp: no images were evaluated")
        out = {}
        for key in sorted(k for k in self.state if k.endswith("_sum")):
            variant = key[: -len("_sum")]
            mean = float(self.state[key][0] / n)
            var = max(float(self.state[f"{variant}_sumsq"][0] / n) - mean * mean, 0.0) * n / max(n - 1, 1)
            extra = {}
            if f"{variant}_estvar" in self.state:
                extra["estimator_stderr"] = float(np.sqrt(self.state[f"{variant}_estvar"][0]) / n)
            warnings = []
            if variant == "total" and mean < COLLAPSE_BPP:
                warnings.append(f"latent collapsed: {mean:.4f} bits/pixel carries almost no information "
                                "(UL-SPEC §5: raise c_lf above 1 or the sigmoid bias b)")
            name = "bpp" if variant == "total" else f"bpp_{variant}"
            bad = int(self.state.get(f"{variant}_nonfinite", np.zeros(1))[0])
            failed = (f"the space's bits['{variant}'] (its rate estimate) were NaN/inf for {bad} of {n} images"
                      if bad else None)
            out[name] = MetricValue(mean, float(np.sqrt(var / n)) if n > 1 else None, n, extra, warnings,
                                    failed=failed)
        return out
