"""Pixel space: the identity latent space of pixel diffusion (8 bits per subpixel, 24 bits/pixel)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ulbench.device import check_precision, resolve_device
from ulbench.protocols import Reconstruction
from ulbench.spaces import DiffusionTarget, SpaceInfo


class PixelSpace:
    """Identity space: z = x as float in [−1, 1]; decode rounds back to uint8; bits = 8 per subpixel.

    The arithmetic runs on `device` (exact in float32, so every device and precision gives the same images);
    latents and images come back on the CPU."""

    name = "pixel"

    def __init__(self, device: str | torch.device = "cpu", precision: str = "fp32", **_: Any):
        self.device, self.precision = torch.device("cpu"), "fp32"
        self.to(device, precision)

    def to(self, device: str | torch.device, precision: str | None = None) -> "PixelSpace":
        """Compute on `device` (precision is recorded; pixel arithmetic is exact float32 anyway); returns self."""
        self.device = resolve_device(device)
        self.precision = check_precision(precision or self.precision)
        return self

    def encode_on_device(self, x_uint8: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """Pixels as float32 in [−1, 1] on the space's device."""
        return x_uint8.to(self.device, non_blocking=True).to(torch.float32) / 127.5 - 1

    def decode_on_device(self, z: torch.Tensor) -> torch.Tensor:
        """Latents back to uint8 (round half to even, clamp) on the space's device."""
        z = z.to(self.device, torch.float32, non_blocking=True)
        return ((z + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)

    def encode(self, x_uint8: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """Pixels as floats in [−1, 1] (CPU float32)."""
        return self.encode_on_device(x_uint8, seeds).cpu()

    def decode(self, z: torch.Tensor, seeds: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Back to uint8 (round, clamp) on the CPU."""
        return self.decode_on_device(z).cpu()

    def reconstruct(self, x_uint8: torch.Tensor, seeds: torch.Tensor) -> Reconstruction:
        """Exact reconstruction; 8 bits per subpixel."""
        bits = np.full(x_uint8.shape[0], 8.0 * x_uint8[0].numel(), dtype=np.float64)
        z = self.encode_on_device(x_uint8, seeds)
        return Reconstruction(self.decode_on_device(z).cpu(), {"total": bits}, z=z.cpu())

    def info(self) -> SpaceInfo:
        """No parameters; latents are pixels in [−1, 1]; 8 bits per subpixel."""
        return SpaceInfo(name=self.name, latent_channels=3, downsample_factor=1, params={"total": 0},
                         stochastic_decoder=False, decoder_evals=0, rate="exact", provenance={"space": "pixel"},
                         details={"latent": "pixels in [-1, 1]"})

    def diffusion_target(self) -> DiffusionTarget:
        """Pixels to λ = 10 with x̂-predictions clipped to [−1, 1] (simple diffusion)."""
        return DiffusionTarget(data=lambda x, seeds: self.encode_on_device(x, seeds), clip=1.0,
                               note="pixels in [-1, 1], denoised to logsnr 10, x-hat clipped")
