"""rFID / gFID and KID on detector features (Heusel et al. 2017; Bińkowski et al. 2018 via torch-fidelity).

Metric ids stay `rfid` / `gfid` / `kid` whatever the detector; labels name the network (`metric_label`): rFID on
torch-fidelity's Inception, rFD-EffNet on EfficientNet-Lite0, "rFID [proxy]" on the proxy."""

from __future__ import annotations

from typing import Any

import numpy as np

from ulbench.metrics.base import AdditiveMetric
from ulbench.metrics.features import FRECHET_PREFIX, Detector, build_detector, metric_label
from ulbench.metrics.frechet import FeatureStats, frechet_distance, rank_deficiency_warning
from ulbench.protocols import Batch, MetricValue


class ReferenceStats:
    """Precomputed (mu, sigma) of a reference set with the provenance it was made under."""

    def __init__(self, mu: np.ndarray, sigma: np.ndarray, n: int, provenance: dict[str, Any],
                 features: np.ndarray | None = None):
        self.mu, self.sigma, self.n, self.provenance = mu, sigma, n, provenance
        self.features = features  # the reference features when known (precision/recall need them)


class FID(AdditiveMetric):
    """Fréchet distance between features of `fake` images and a reference (the batch's real images or
    precomputed statistics). rFID when fake are reconstructions, gFID when they are samples."""

    name, label, higher_is_better = "rfid", "rFID", False
    needs = frozenset({"real", "fake"})

    def __init__(self, detector: Detector | str = "inception-v3-compat", weights: str | None = None,
                 reference: ReferenceStats | None = None, name: str | None = None, **_: Any):
        self.detector = build_detector(detector, weights) if isinstance(detector, str) else detector
        self.reference = reference
        if name:
            self.name = name
        if self.name in FRECHET_PREFIX:  # rFID only on FID's Inception, else rFD-<network>
            self.label = metric_label(self.name, self.detector)
        elif self.detector.is_proxy:  # subclasses with their own network and name (FVD on I3D)
            self.label += " [proxy]"
        if reference is not None:
            self.needs = frozenset({"fake"})
        super().__init__()

    def init_state(self) -> dict[str, np.ndarray]:
        """Float64 sums for the fake set (and the real set unless a reference is given)."""
        d = self.detector.dim
        state = {f"fake_{k}": v for k, v in FeatureStats(d).as_arrays().items()}
        if self.reference is None:
            state.update({f"real_{k}": v for k, v in FeatureStats(d).as_arrays().items()})
        return state

    def _add(self, prefix: str, feats: np.ndarray) -> None:
        self.state[f"{prefix}_n"] += feats.shape[0]
        self.state[f"{prefix}_sum_x"] += feats.sum(axis=0)
        self.state[f"{prefix}_sum_xxT"] += feats.T @ feats

    def update(self, batch: Batch) -> None:
        """Accumulate the batch's features."""
        self._add("fake", batch.features(self.detector, "fake"))
        if self.reference is None:
            self._add("real", batch.features(self.detector, "real"))

    def _stats(self, prefix: str) -> FeatureStats:
        return FeatureStats(self.detector.dim, int(self.state[f"{prefix}_n"][0]), self.state[f"{prefix}_sum_x"],
                            self.state[f"{prefix}_sum_xxT"])

    def compute(self) -> dict[str, MetricValue]:
        """d² between the fake statistics and the reference."""
        fake = self._stats("fake")
        mu2, s2 = fake.mean_cov()
        if self.reference is None:
            real = self._stats("real")
            mu1, s1 = real.mean_cov()
            n_ref = real.n
        else:
            mu1, s1, n_ref = self.reference.mu, self.reference.sigma, self.reference.n
        value = frechet_distance(mu1, s1, mu2, s2)
        warnings = [w for w in (rank_deficiency_warning(fake.n, self.detector.dim),) if w]
        return {self.name: MetricValue(value, None, fake.n, {"n_ref": n_ref}, warnings)}

    def provenance(self) -> dict[str, Any]:
        """Detector provenance and the reference used."""
        ref = "real images of the evaluated split" if self.reference is None else self.reference.provenance
        return {**self.detector.provenance(), "reference": ref}


def kid_from_features(real, fake, subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0) -> tuple[float, float | None, int, int]:
    """KID (Bińkowski et al. 2018, unbiased MMD², cubic kernel) via torch-fidelity: (mean, std, size, subsets).

    Subset rule: size = min(subset_size, n_real, n_fake), torch-fidelity's default of 1000 capped at the set sizes.
    When size equals both set sizes, every subset is the whole set (fewer than 2 distinct subsets are possible):
    KID is computed once on the full sets and its std is None (not reported), instead of the spurious
    ± 2e-16 that 100 identical subsets give. Otherwise std is the spread over `subsets` random subsets.
    """
    import torch
    from torch_fidelity.metric_kid import kid_features_to_metric

    real, fake = torch.as_tensor(real), torch.as_tensor(fake)
    size = min(subset_size, len(real), len(fake))
    whole = size == len(real) == len(fake)
    subsets = 1 if whole else subsets
    out = kid_features_to_metric(real, fake, kid_subsets=subsets, kid_subset_size=size, kid_degree=3,
                                 kid_gamma=None, kid_coef0=1, rng_seed=seed, verbose=False)
    std = None if whole else float(out["kernel_inception_distance_std"])
    return float(out["kernel_inception_distance_mean"]), std, size, subsets


class KID(AdditiveMetric):
    """Kernel Inception Distance via torch-fidelity's `kid_features_to_metric` (cubic kernel, 100 subsets; subset
    size and stderr by the rule of `kid_from_features`).

    State: features scattered into an (N_total, D) float64 array by dataset index plus a mask, so shards and
    ranks merge by addition (no all_gather of unequal sizes) and order never depends on batching.
    """

    name, label, higher_is_better = "kid", "KID", False
    needs = frozenset({"real", "fake"})

    def __init__(self, detector: Detector | str = "inception-v3-compat", weights: str | None = None,
                 num_items: int = 0, subsets: int = 100, subset_size: int = 1000, seed: int = 0, **_: Any):
        self.detector = build_detector(detector, weights) if isinstance(detector, str) else detector
        if num_items <= 0:
            raise ValueError("KID needs num_items (the dataset size) to lay out its additive state")
        self.num_items, self.subsets, self.subset_size, self.seed = num_items, subsets, subset_size, seed
        self.label = metric_label("kid", self.detector)  # KID on FID's Inception, else KD-<network>
        super().__init__()

    def init_state(self) -> dict[str, np.ndarray]:
        """Zero feature tables for real and fake, and their masks."""
        n, d = self.num_items, self.detector.dim
        return {"real": np.zeros((n, d)), "fake": np.zeros((n, d)), "mask_real": np.zeros(n), "mask_fake": np.zeros(n)}

    def update(self, batch: Batch) -> None:
        """Place the batch's features at their dataset indices."""
        for which in ("real", "fake"):
            self.state[which][batch.indices] += batch.features(self.detector, which)
            self.state[f"mask_{which}"][batch.indices] += 1

    def compute(self) -> dict[str, MetricValue]:
        """Mean and std of the unbiased MMD² over random subsets (torch-fidelity's estimator; `kid_from_features`)."""
        import torch

        feats = {}
        for which in ("real", "fake"):
            mask = self.state[f"mask_{which}"]
            if np.any(mask > 1):
                raise ValueError("KID state counts an image twice: shards overlapped")
            feats[which] = torch.from_numpy(self.state[which][mask > 0])
        n = min(len(feats["real"]), len(feats["fake"]))
        if n < 2:
            raise ValueError(f"KID needs at least 2 samples per set, got {n}")
        mean, std, size, subsets = kid_from_features(feats["real"], feats["fake"], self.subsets, self.subset_size,
                                                     self.seed)
        return {self.name: MetricValue(mean, std, int(len(feats["fake"])), {"subset_size": size, "subsets": subsets})}

    def provenance(self) -> dict[str, Any]:
        """Detector provenance and the subset protocol."""
        return {**self.detector.provenance(), "kid_subsets": self.subsets, "kid_subset_size": self.subset_size,
                "kid_seed": self.seed}
