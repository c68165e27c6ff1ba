"""When is an ablation's direction resolved? Seeds (Welch's t) or, with one seed, the per-image standard errors.

The rule the reports state (ORDERING_RULE): a direction against the baseline is called only when it is resolved at
two-sided p < 0.05 — Welch's t-test over training seeds when both rows have ≥ 2 seeds, else a z-test on the
difference of the two means with their per-image standard errors (unpaired, so conservative: the same eval images
make the real difference less noisy); a metric with neither (FID with one seed) is "not resolved". A paper difference
under 5% of the baseline is "no change", not a direction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
PAPER_NO_CHANGE = 0.05  # |paper row − paper baseline| / |paper baseline| below this: "no change"
ORDERING_RULE = ("A direction is called only when resolved at two-sided p < 0.05: Welch's t over training seeds "
                 "when both rows have >= 2 seeds, else a z-test with the per-image standard errors (unpaired, "
                 "conservative); otherwise 'not resolved'. Paper differences under 5% of the baseline count as "
                 "'no change'.")


@dataclass(frozen=True)
class Estimate:
    """A metric of one row: values over its seeds and the per-image standard error of each."""

    values: tuple[float, ...]
    stderrs: tuple[float | None, ...]

    @property
    def mean(self) -> float:
        """Mean over seeds."""
        return float(np.mean(self.values))

    @property
    def seed_se(self) -> float | None:
        """Standard error of the mean over seeds (None with one seed)."""
        n = len(self.values)
        return float(np.std(self.values, ddof=1) / math.sqrt(n)) if n > 1 else None

    @property
    def image_se(self) -> float | None:
        """Per-image standard error of the mean over seeds (None when a seed has none)."""
        se = [s for s in self.stderrs if s is not None and s == s]
        if len(se) != len(self.stderrs) or not se:
            return None
        return float(math.sqrt(sum(s * s for s in se)) / len(se))


def direction(row: Estimate, base: Estimate) -> tuple[str, float | None]:
    """("up" | "down" | "not resolved", two-sided p) of row against base under ORDERING_RULE."""
    diff = row.mean - base.mean
    if len(row.values) > 1 and len(base.values) > 1:
        if np.ptp(row.values) == 0 and np.ptp(base.values) == 0:
            p = 0.0 if diff != 0 else 1.0  # deterministic rows (e.g. FLOPs): any difference is exact
        else:
            p = float(stats.ttest_ind(row.values, base.values, equal_var=False).pvalue)
    elif row.image_se is not None and base.image_se is not None and (row.image_se or base.image_se):
        z = diff / math.hypot(row.image_se, base.image_se)
        p = float(2 * stats.norm.sf(abs(z)))
    else:
        return "not resolved", None
    if p < ALPHA and diff != 0:
        return ("up" if diff > 0 else "down"), p
    return "not resolved", p


def paper_direction(paper_row: float, paper_base: float) -> str:
    """"up", "down" or "no change" (under PAPER_NO_CHANGE of the baseline)."""
    if abs(paper_row - paper_base) < PAPER_NO_CHANGE * abs(paper_base):
        return "no change"
    return "up" if paper_row > paper_base else "down"


def verdict(want: str, got: str, p: float | None) -> str:
    """The orderings-table cell: the paper's direction, ours with its p, and whether they agree."""
    ps = f", p={p:.2g}" if p is not None else ""
    if want == "no change":
        return f"paper no change, ours {got}{ps}: " + ("consistent" if got == "not resolved" else "ours moves")
    if got == "not resolved":
        return f"paper {want}, ours not resolved{ps}"
    return f"paper {want}, ours {got}{ps}: " + ("reproduced" if want == got else "NOT reproduced")
