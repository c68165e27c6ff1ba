"""Registries of spaces, metrics, datasets, detectors and suites with lazy imports (lm-eval, torch-fidelity)."""

from __future__ import annotations

import difflib
import importlib
import re
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Entry:
    """A registered name: `target` is "module:attr" imported on first use, so `ulbench ls` stays fast."""

    name: str
    target: str
    help: str
    pattern: str | None = None  # regex for parametrised names, e.g. r"jpeg-q(?P<quality>\d+)"

    def load(self) -> Callable[..., Any]:
        """Import and return the factory."""
        module, attr = self.target.split(":")
        return getattr(importlib.import_module(module), attr)


class Registry:
    """Name -> factory, with did-you-mean errors."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, target: str, help: str = "", pattern: str | None = None) -> None:
        """Add a name; `pattern` lets one entry serve a family such as jpeg-q1 ... jpeg-q100."""
        self._entries[name] = Entry(name, target, help, pattern)

    def names(self) -> list[str]:
        """Registered names in order."""
        return list(self._entries)

    def entries(self) -> list[Entry]:
        """Registered entries in order."""
        return list(self._entries.values())

    def resolve(self, spec: str) -> tuple[Entry, dict[str, str]]:
        """Find the entry for `spec` and its parameters ("ul:runs/x" -> path="runs/x"; "jpeg-q50" -> quality)."""
        if spec in self._entries and self._entries[spec].pattern is None:
            return self._entries[spec], {}
        for entry in self._entries.values():
            if entry.pattern:
                m = re.fullmatch(entry.pattern, spec)
                if m:
                    return entry, {k: v for k, v in m.groupdict().items() if v is not None}
        close = difflib.get_close_matches(spec, self.names(), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"Unknown {self.kind} {spec!r}.{hint} Known {self.kind}s: {', '.join(self.names())} "
            f"(see `ulbench ls`)."
        )

    def build(self, spec: str, **kwargs: Any) -> Any:
        """Resolve `spec` and call its factory with the parsed parameters plus `kwargs`."""
        entry, params = self.resolve(spec)
        return entry.load()(**params, **kwargs)


SPACES = Registry("space")
SPACES.register("pixel", "baselines.pixel:PixelSpace", "identity: pixels are the latents (24 bpp)")
SPACES.register(
    "jpeg-q{N}", "baselines.jpeg:JpegSpace", "PIL JPEG at quality N (1-95): real encoded bits",
    pattern=r"jpeg-q(?P<quality>\d+)",
)
SPACES.register(
    "ul:RUN_DIR", "ul_models.space:load_ul_space", "Unified Latents trained by `ulbench train ul`",
    pattern=r"ul:(?P<run_dir>.+)",
)
SPACES.register(
    "sd-vae-ft-mse[:DIR]", "baselines.sd_vae:load_sd_vae", "Stable Diffusion VAE ft-MSE (local DIR or HF cache)",
    pattern=r"(?P<variant>sd-vae-ft-mse)(?::(?P<path>.+))?",
)
SPACES.register(
    "sd-vae-ft-ema[:DIR]", "baselines.sd_vae:load_sd_vae", "Stable Diffusion VAE ft-EMA (local DIR or HF cache)",
    pattern=r"(?P<variant>sd-vae-ft-ema)(?::(?P<path>.+))?",
)
SPACES.register(
    "sd-vae-tiny:RUN_DIR", "baselines.sd_vae:load_sd_vae_tiny", "small AutoencoderKL trained in-suite (KL-VAE)",
    pattern=r"sd-vae-tiny:(?P<run_dir>.+)",
)

METRICS = Registry("metric")
METRICS.register("rfid", "ulbench.metrics.fid:FID", "Fréchet distance of reconstructions to originals")
METRICS.register("kid", "ulbench.metrics.fid:KID", "kernel inception distance (unbiased MMD², cubic kernel)")
METRICS.register("psnr", "ulbench.metrics.psnr_ssim:PSNR", "peak signal-to-noise ratio, dB (scikit-image oracle)")
METRICS.register("ssim", "ulbench.metrics.psnr_ssim:SSIM", "structural similarity (scikit-image oracle)")
METRICS.register("lpips", "ulbench.metrics.lpips_metric:LPIPS", "LPIPS distance (lpips package)")
METRICS.register("bpp", "ulbench.metrics.bits:BitsPerPixel", "bits per pixel from the space (H·W pixels)")
METRICS.register("is", "ulbench.metrics.isc_prc:InceptionScore",
                 "Inception Score of the outputs (torch-fidelity; Inception detectors only)")
METRICS.register("prc", "ulbench.metrics.isc_prc:PrecisionRecall",
                 "precision and recall, k=3 (Kynkäänniemi et al. 2019; torch-fidelity): rows precision, recall")

DATASETS = Registry("dataset")
DATASETS.register("embedded", "ulbench.data.embedded:embedded_photos", "crops of scikit-image's bundled photos")
DATASETS.register(
    "embedded-textures", "ulbench.data.embedded:embedded_textures", "crops of bundled grey textures (other data)"
)
DATASETS.register(
    "folder:DIR", "ulbench.data.folder:ImageFolderDataset", "ImageNet-layout folder or zip of PNGs (ADM crop)",
    pattern=r"folder:(?P<root>.+)",
)
DATASETS.register(
    "npz:PATH", "ulbench.data.npz:NpzDataset", "ADM sample batch .npz (arr_0 uint8 NHWC, optional arr_1 labels)",
    pattern=r"npz:(?P<path>.+)",
)

DETECTORS = Registry("detector")
DETECTORS.register(
    "inception-v3-compat", "ulbench.metrics.features:InceptionDetector", "torch-fidelity's TF-compatible Inception"
)
DETECTORS.register(
    "clean-fid", "ulbench.metrics.features:CleanFidDetector", "clean-fid resize (PIL bicubic) + the same Inception"
)
DETECTORS.register("proxy", "ulbench.metrics.features:ProxyDetector", "fixed random conv features: NOT FID (offline)")

METRICS.register("fvd", "ulbench.metrics.fvd:FVD", "Fréchet video distance (I3D Kinetics-400 logits, 224 px)")
DATASETS.register("video-embedded", "ulbench.data.video:embedded_videos",
                  "pan/zoom clips over bundled photos (mp4, decord)")
DATASETS.register("kinetics600:DIR", "ulbench.data.video:KineticsDataset",
                  "Kinetics-600 clips + official CSV (decord)", pattern=r"kinetics600:(?P<root>.+)")
DETECTORS.register("i3d", "ulbench.metrics.fvd:I3DDetector",
                   "I3D Kinetics-400 (StyleGAN-V TorchScript or VideoGPT state dict)")
DETECTORS.register("video-proxy", "ulbench.metrics.fvd:VideoProxyDetector",
                   "fixed random spatio-temporal features: NOT FVD")
