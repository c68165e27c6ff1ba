"""Pixel space: the identity latent space of pixel diffusion (8 bits per subpixel, 24 bits/pixel)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ulbench.protocols import Reconstruction


class PixelSpace:
    """Identity space: z = x as float in [−1, 1]; decode rounds back to uint8; bits = 8 per subpixel."""

    name = "pixel"

    def __init__(self, **_: Any):
        pass

    def encode(self, x_uint8: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """Pixels as floats in [−1, 1]."""
        return x_uint8.to(torch.float32) / 127.5 - 1

    def decode(self, z: torch.Tensor, seeds: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Back to uint8 (round half up, clamp)."""
        return ((z + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)

    def reconstruct(self, x_uint8: torch.Tensor, seeds: torch.Tensor) -> Reconstruction:
        """Exact reconstruction; 8 bits per subpixel."""
        bits = np.full(x_uint8.shape[0], 8.0 * x_uint8[0].numel(), dtype=np.float64)
        z = self.encode(x_uint8, seeds)
        return Reconstruction(self.decode(z, seeds), {"total": bits}, z=z)

    def info(self) -> dict[str, Any]:
        """No parameters; latents are pixels."""
        return {"space": self.name, "latent": "pixels in [-1, 1]", "downsample_factor": 1, "params": 0}
