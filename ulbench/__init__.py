"""ulbench: evaluation and benchmarking of diffusion latent spaces (Unified Latents, arXiv 2602.17270).

    import ulbench
    rows = ulbench.evaluate("jpeg-q50", data="embedded", metrics=["psnr", "bpp"])
    rows.to_pandas()

Names are imported on first use, so `import ulbench` (and the CLI's start-up) stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_space": "ulbench.api", "evaluate": "ulbench.api", "Results": "ulbench.api",
    "register_space": "ulbench.registry",
    "SpaceInfo": "ulbench.spaces", "DiffusionTarget": "ulbench.spaces",
    "Reconstruction": "ulbench.protocols", "ResultRow": "ulbench.results",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ulbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
