"""The open latent-space contract (ARCHITECTURE.md §Spaces): SpaceInfo, optional capabilities, the diffusion target.

A space is any object with `name`, `encode(x_uint8, seeds)`, `decode(z, seeds, steps)`, `reconstruct(x_uint8, seeds)`
and `info() -> SpaceInfo`. What else it can do it declares by having the method, never by its name or class:

- `bits(x_uint8, seeds) -> (bits, stderr)`: a rate of its own per image;
- `diffusion_target() -> DiffusionTarget`: what a stage-2 model should learn on it (default: its latents to λ = 10);
- `flop_components(resolution) -> [(name, module, example_inputs)]`: networks to count FLOPs of (fvcore);
- `sample_prior(seeds, steps) -> z`: a prior of its own that can stand in for a base model (single-stage generation).
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

CAPABILITIES = ("bits", "diffusion_target", "flop_components", "sample_prior")
REQUIRED = ("encode", "decode", "reconstruct", "info")
RATES = ("ul_bound", "kl", "exact", "entropy", "codebook_upper_bound", None)


@dataclass(frozen=True)
class SpaceInfo:
    """What a latent space is: latent shape, downsampling, parameters, decoder kind, rate and provenance."""

    name: str
    latent_channels: int | None  # C of the (C, H/f, W/f) latents; None: no continuous latents (e.g. JPEG bytes)
    downsample_factor: int  # image side / latent side (1 for pixels)
    params: dict[str, int]  # parameter count per component, "total" included
    stochastic_decoder: bool  # decoding draws noise (from each image's seed)
    decoder_evals: int  # network evaluations per decoded image (sampler steps; 1: one pass; 0: no network)
    rate: str | None  # what bits["total"] is: ul_bound | kl | exact | entropy | codebook_upper_bound | None
    provenance: dict[str, Any]  # where the weights came from: source, class, config hash, weights sha256, ...
    latent_shape: tuple[int, ...] | None = None  # (C, h, w) when the space has one fixed resolution
    details: dict[str, Any] = field(default_factory=dict)  # anything else the space wants on record

    def __post_init__(self):
        if "total" not in self.params:
            raise ValueError(f"SpaceInfo({self.name!r}).params needs a 'total' entry, got {sorted(self.params)}")
        if self.rate not in RATES:
            raise ValueError(f"SpaceInfo({self.name!r}).rate must be one of {RATES}, got {self.rate!r}")
        if self.latent_shape is not None:
            object.__setattr__(self, "latent_shape", tuple(int(s) for s in self.latent_shape))

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as stored in result provenance and cache keys."""
        d = dataclasses.asdict(self)
        d["latent_shape"] = list(self.latent_shape) if self.latent_shape is not None else None
        return d

    def replace(self, **changes: Any) -> "SpaceInfo":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class DiffusionTarget:
    """What a stage-2 model learns on a space (UL-SPEC §6): its clean data, how far it denoises, and the way back."""

    data: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_uint8, seeds) -> clean float data (N, C, h, w)
    logsnr_max: float = 10.0  # least noise the stage-2 model reaches (UL: λ₀, where its sample *is* z₀)
    sample_is_latent: bool = False  # the stage-2 sample at logsnr_max is handed to `decode` as is (noisy z₀)
    clip: float | None = None  # clip x̂-predictions to ±clip while sampling (pixels: 1)
    to_latent: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # sample -> decode input
    note: str = ""  # one line for provenance


def capabilities(space: Any) -> tuple[str, ...]:
    """The optional capabilities a space declares (callable attributes of CAPABILITIES' names)."""
    return tuple(c for c in CAPABILITIES if callable(getattr(space, c, None)))


def space_info(space: Any) -> SpaceInfo:
    """`space.info()`, checked to be a SpaceInfo (user spaces get a message naming the contract)."""
    info = space.info()
    if not isinstance(info, SpaceInfo):
        raise TypeError(f"space {getattr(space, 'name', type(space).__name__)!r}: info() returned "
                        f"{type(info).__name__}, expected ulbench.SpaceInfo (see ulbench/spaces.py)")
    return info


def check_space(space: Any, origin: str) -> Any:
    """Refuse an object that does not meet the contract, naming what is missing; returns the space."""
    missing = [m for m in REQUIRED if not callable(getattr(space, m, None))]
    if missing or not isinstance(getattr(space, "name", None), str):
        what = missing + ([] if isinstance(getattr(space, "name", None), str) else ["name (a str attribute)"])
        raise TypeError(f"{origin} returned a {type(space).__name__} that is not a latent space: it lacks "
                        f"{', '.join(what)} (contract: ulbench/spaces.py)")
    space_info(space)
    return space


def diffusion_target(space: Any, batch: int = 256) -> DiffusionTarget | None:
    """The space's declared target, or its encoded latents to λ = 10; None when it has no continuous latents."""
    if "diffusion_target" in capabilities(space):
        return space.diffusion_target()
    if space_info(space).latent_channels is None:
        return None

    def data(x: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        return torch.cat([space.encode(x[i:i + batch], seeds[i:i + batch]).float() for i in range(0, len(x), batch)])

    return DiffusionTarget(data=data, note="the space's own latents, denoised to logsnr 10")


def total_params(modules: dict[str, torch.nn.Module | None]) -> dict[str, int]:
    """Parameter counts per named module plus their "total" (None entries count 0)."""
    counts = {k: sum(p.numel() for p in m.parameters()) if m is not None else 0 for k, m in modules.items()}
    return {**counts, "total": sum(counts.values())}


def accepts(factory: Callable[..., Any], names: tuple[str, ...]) -> list[str]:
    """The keyword names among `names` that `factory` cannot take (empty when it has **kwargs)."""
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return []
    have = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return [n for n in names if n not in have]
