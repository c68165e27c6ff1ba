"""Additive float64 feature statistics and a robust Fréchet distance (Heusel et al. 2017, eq. 6; edm2)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np


@dataclass
class FeatureStats:
    """Sum of features, sum of outer products and count, in float64: merges exactly across batches and ranks."""

    dim: int
    n: int = 0
    sum_x: np.ndarray = field(default=None)  # (dim,)
    sum_xxT: np.ndarray = field(default=None)  # (dim, dim)

    def __post_init__(self):
        if self.sum_x is None:
            self.sum_x = np.zeros(self.dim, dtype=np.float64)
        if self.sum_xxT is None:
            self.sum_xxT = np.zeros((self.dim, self.dim), dtype=np.float64)

    def update(self, features: np.ndarray) -> None:
        """Add a (N, dim) batch of features."""
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or f.shape[1] != self.dim:
            raise ValueError(f"features must be (N, {self.dim}), got {f.shape}")
        self.n += f.shape[0]
        self.sum_x += f.sum(axis=0)
        self.sum_xxT += f.T @ f

    def merge(self, other: "FeatureStats") -> None:
        """Add another shard's sums."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of dim {other.dim} into dim {self.dim}")
        self.n += other.n
        self.sum_x += other.sum_x
        self.sum_xxT += other.sum_xxT

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and unbiased covariance (np.cov convention, ddof=1)."""
        if self.n < 2:
            raise ValueError(
                f"Fréchet statistics need at least 2 samples, got {self.n}; evaluate more images (FID is "
                "usually reported at 50,000)."
            )
        mu = self.sum_x / self.n
        sigma = (self.sum_xxT - self.n * np.outer(mu, mu)) / (self.n - 1)
        return mu, (sigma + sigma.T) / 2

    def as_arrays(self) -> dict[str, np.ndarray]:
        """The additive state as arrays (for all_reduce and caching)."""
        return {"n": np.array([self.n], dtype=np.float64), "sum_x": self.sum_x, "sum_xxT": self.sum_xxT}


def _clip_roundoff(w: np.ndarray) -> np.ndarray:
    """Zero the eigenvalues that are round-off of a rank-deficient PSD matrix (|w| ≤ dim·eps·max w): their
    square roots (~1e-8 each) would otherwise add up over thousands of null dimensions."""
    tol = len(w) * np.finfo(np.float64).eps * max(float(np.max(np.abs(w))), 0.0)
    return np.where(w > tol, w, 0.0)


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root by eigendecomposition, round-off eigenvalues set to 0."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(_clip_roundoff(w))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((Σ1 Σ2)^{1/2}) = Σ sqrt(eig(Σ1^{1/2} Σ2 Σ1^{1/2})): real and finite even for rank-deficient Σ."""
    s1 = _psd_sqrt(sigma1)
    m = s1 @ sigma2 @ s1
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(_clip_roundoff(w)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """d² = ‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^{1/2}) (Heusel et al. 2017), in float64."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics differ in shape: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs "
                         f"{sigma2.shape}; were they made by the same detector?")
    for name, arr in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} has non-finite entries: the features contain NaN or inf")
    diff = mu1 - mu2
    d = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2))
    return max(d, 0.0)


def rank_deficiency_warning(n: int, dim: int) -> str | None:
    """A warning text when fewer samples than feature dimensions make Σ singular and FID biased."""
    if n <= dim:
        return (f"only {n} samples for {dim}-d features: the covariance is rank-deficient and the Fréchet "
                f"distance is biased upwards; compare only numbers with the same n")
    return None


def stats_from_npz(path: str, with_n: bool = False) -> tuple:
    """Read (mu, sigma) — and n, -1 if absent — from a reference `.npz` (ADM `VIRTUAL_imagenet512.npz` or
    ulbench's own)."""
    try:
        with np.load(path) as data:
            if "mu" not in data or "sigma" not in data:
                raise ValueError(f"{path}: a reference statistics file needs arrays 'mu' and 'sigma', "
                                 f"found {sorted(data.files)}")
            mu, sigma = np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64)
            n = int(data["n"]) if "n" in data.files else -1
            return (mu, sigma, n) if with_n else (mu, sigma)
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npz file ({e})") from e


def warn_once(message: str | None) -> None:
    """Emit a UserWarning if `message` is set."""
    if message:
        warnings.warn(message, stacklevel=3)
