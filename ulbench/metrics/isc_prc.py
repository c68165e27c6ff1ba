"""Inception Score (Salimans et al. 2016) and precision / recall with k = 3 (Kynkäänniemi et al. 2019), both
computed by torch-fidelity's own functions on the features ulbench's detectors already extract.

Names: `is` scores the fake images (reconstructions in `ulbench eval`, samples in the generator path, DIR_A in
`ulbench fid`); `prc` gives two rows, `precision` (fake images inside the real manifold) and `recall` (real images
inside the fake manifold). Labels name the detector network, e.g. "IS[inception-v3-compat]".

Precision/recall run on the detector's features: with Inception, the 2048-d pool features, as ADM's evaluator (whose
numbers diffusion papers report) does; Kynkäänniemi et al. and torch-fidelity's default use VGG-16 fc2 features
instead, which ulbench has no detector for, so the label says which network gave the number.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ulbench.metrics.base import AdditiveMetric
from ulbench.metrics.features import Detector, build_detector
from ulbench.protocols import Batch, MetricValue

ISC_SPLITS = 10  # torch-fidelity `isc_splits` default
ISC_SHUFFLE_SEED = 2020  # torch-fidelity `rng_seed` default: the permutation before splitting is part of the protocol
PRC_NEIGHBORHOOD = 3  # k of the k-NN balls (Kynkäänniemi et al. 2019; torch-fidelity `prc_neighborhood`)
PRC_BATCH_SIZE = 10000  # torch-fidelity `prc_batch_size`: cdist block size


def inception_logits(detector: Detector, pool_features: np.ndarray) -> np.ndarray:
    """Inception `logits_unbiased` (torch-fidelity's IS layer: pool · Wᵀ, no bias) from 2048-d pool features, or a
    ValueError naming the detector when it has no ImageNet classifier (the proxy)."""
    fn = getattr(detector, "logits_unbiased", None)
    if fn is None:
        raise ValueError(f"the Inception Score needs the Inception classifier's logits; detector {detector.name!r} "
                         f"has none (a proxy IS would not be IS). Use --detector inception-v3-compat with --weights, "
                         f"or leave IS out ('is' in --metrics, --isc of `ulbench fid`)")
    return fn(pool_features)


def inception_score(logits: np.ndarray, splits: int = ISC_SPLITS) -> tuple[float, float]:
    """IS = exp E[KL(p(y|x) ‖ p(y))], mean and std over `splits` shuffled splits (torch-fidelity's estimator)."""
    from torch_fidelity.metric_isc import isc_features_to_metric

    if len(logits) < splits:
        raise ValueError(f"the Inception Score uses {splits} splits: it needs at least {splits} images, got "
                         f"{len(logits)}")
    out = isc_features_to_metric(torch.from_numpy(np.asarray(logits, np.float64)), splits=splits, shuffle=True,
                                 rng_seed=ISC_SHUFFLE_SEED)
    return out["inception_score_mean"], out["inception_score_std"]


def precision_recall(fake: np.ndarray, real: np.ndarray, k: int = PRC_NEIGHBORHOOD) -> dict[str, float]:
    """Improved precision and recall with k-NN balls (Kynkäänniemi et al. 2019), torch-fidelity's estimator."""
    from torch_fidelity.metric_prc import prc_features_to_metric

    if min(len(fake), len(real)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} images per set, got {len(fake)} fake "
                         f"and {len(real)} real")
    # float32 as torch-fidelity extracts them (our float64 copies of float32 features convert back exactly): its
    # cdist runs the same kernels on the same numbers, so the ball-membership ties break the same way.
    f1, f2 = (torch.from_numpy(np.asarray(a)).float() for a in (fake, real))
    return prc_features_to_metric(f1, f2, prc_neighborhood=k, prc_batch_size=PRC_BATCH_SIZE, save_cpu_ram=False,
                                  verbose=False)


class _IndexedFeatures(AdditiveMetric):
    """Per-image features scattered into (num_items, dim) float64 tables by dataset index plus masks, so shards and
    ranks merge by addition and the result never depends on batching (the same layout as KID)."""

    tables: tuple[str, ...] = ()
    dim = 0

    def init_state(self) -> dict[str, np.ndarray]:
        """Zero tables and masks."""
        state = {}
        for t in self.tables:
            state[t], state[f"mask_{t}"] = np.zeros((self.num_items, self.dim)), np.zeros(self.num_items)
        return state

    def _put(self, table: str, indices: np.ndarray, values: np.ndarray) -> None:
        self.state[table][indices] += values
        self.state[f"mask_{table}"][indices] += 1

    def _rows(self, table: str) -> np.ndarray:
        mask = self.state[f"mask_{table}"]
        if np.any(mask > 1):
            raise ValueError(f"{self.name} state counts an image twice: shards overlapped")
        return self.state[table][mask > 0]


def _detector_of(detector: Detector | str, weights: str | None) -> Detector:
    return build_detector(detector, weights) if isinstance(detector, str) else detector


class InceptionScore(_IndexedFeatures):
    """IS of the fake images from the Inception `logits_unbiased`; refuses detectors without a classifier.
    The value's stderr is the std over the 10 splits (torch-fidelity's ±), as for KID."""

    name, higher_is_better = "is", True
    needs = frozenset({"fake"})
    tables = ("fake",)

    def __init__(self, detector: Detector | str = "inception-v3-compat", weights: str | None = None,
                 num_items: int = 0, name: str | None = None, **_: Any):
        self.detector = _detector_of(detector, weights)
        inception_logits(self.detector, np.zeros((1, self.detector.dim)))  # refuse the proxy before any work
        if num_items <= 0:
            raise ValueError("IS needs num_items (the number of images) to lay out its additive state")
        self.num_items, self.dim = num_items, int(self.detector.logits_dim)
        self.name = name or self.name
        self.label = f"{'gIS' if self.name == 'gis' else 'IS'}[{self.detector.name}]"
        super().__init__()

    def update(self, batch: Batch) -> None:
        """Logits of the batch's fake images (from the pool features other metrics share) at their indices."""
        self._put("fake", batch.indices, inception_logits(self.detector, batch.features(self.detector, "fake")))

    def compute(self) -> dict[str, MetricValue]:
        """Mean and std over splits."""
        logits = self._rows("fake")
        mean, std = inception_score(logits)
        return {self.name: MetricValue(mean, std, len(logits), {"splits": ISC_SPLITS, "std_over_splits": std})}

    def provenance(self) -> dict[str, Any]:
        """Detector provenance and the split protocol."""
        return {**self.detector.provenance(), "feature_layer": "logits_unbiased", "isc_splits": ISC_SPLITS,
                "isc_shuffle_seed": ISC_SHUFFLE_SEED}


class PrecisionRecall(_IndexedFeatures):
    """Precision and recall (k = 3) of fake against real pool features; the real side is the batch's real images or
    a reference's features (generator path). Rows `precision` and `recall` (prefixed `g` for samples)."""

    name, higher_is_better = "prc", True
    needs = frozenset({"real", "fake"})

    def __init__(self, detector: Detector | str = "inception-v3-compat", weights: str | None = None,
                 num_items: int = 0, reference_features: np.ndarray | None = None, prefix: str = "", **_: Any):
        self.detector = _detector_of(detector, weights)
        if num_items <= 0:
            raise ValueError("precision/recall needs num_items (the number of images) to lay out its additive state")
        self.num_items, self.dim, self.prefix = num_items, self.detector.dim, prefix
        self.reference_features = reference_features
        self.tables = ("fake",) if reference_features is not None else ("real", "fake")
        if reference_features is not None:
            self.needs = frozenset({"fake"})
        self.label = f"{prefix}precision/recall[{self.detector.name}]"
        super().__init__()

    def row_label(self, row_name: str) -> str:
        """"precision[inception-v3-compat]": every row names the detector network."""
        return f"{row_name}[{self.detector.name}]"

    def update(self, batch: Batch) -> None:
        """Pool features of the batch's images at their dataset indices."""
        for which in self.tables:
            self._put(which, batch.indices, batch.features(self.detector, which))

    def compute(self) -> dict[str, MetricValue]:
        """Precision and recall rows (torch-fidelity's F-score in their extras)."""
        fake = self._rows("fake")
        real = self.reference_features if self.reference_features is not None else self._rows("real")
        out = precision_recall(fake, real)
        extra = {"k": PRC_NEIGHBORHOOD, "n_real": len(real), "f_score": out["f_score"]}
        return {f"{self.prefix}{key}": MetricValue(out[key], None, len(fake), extra) for key in ("precision", "recall")}

    def provenance(self) -> dict[str, Any]:
        """Detector provenance and k."""
        return {**self.detector.provenance(), "prc_neighborhood": PRC_NEIGHBORHOOD}
