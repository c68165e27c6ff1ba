"""JPEG at quality N (PIL/libjpeg): a classical codec whose bits are the real encoded size."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import PIL
import torch
from PIL import Image

from ulbench.device import check_precision, resolve_device
from ulbench.protocols import Reconstruction
from ulbench.spaces import SpaceInfo


def jpeg_encode(img_hwc: np.ndarray, quality: int) -> bytes:
    """Baseline JPEG bytes of one uint8 HxWx3 image (PIL defaults: 4:2:0 chroma, standard tables)."""
    buf = io.BytesIO()
    Image.fromarray(img_hwc).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def entropy_coded_bytes(data: bytes) -> int:
    """Bytes of entropy-coded scan data: everything between each SOS header and the next non-RST marker."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG stream (no SOI marker)")
    pos, total = 2, 0
    while pos < len(data) - 1:
        if data[pos] != 0xFF:
            raise ValueError(f"corrupt JPEG: expected a marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xD9:  # EOI
            break
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        pos += 2 + length
        if marker == 0xDA:  # SOS: scan data until a marker that is not stuffing (FF00) or restart (FFD0-D7)
            start = pos
            while pos < len(data) - 1 and not (data[pos] == 0xFF and data[pos + 1] != 0
                                                 and not 0xD0 <= data[pos + 1] <= 0xD7):
                pos += 1
            total += pos - start
    return total


class JpegSpace:
    """`jpeg-qN`: bits are the whole file ("total") and the entropy-coded data alone ("entropy"), since
    headers and tables cost ~600 bytes, ~5 bits/pixel by themselves at 32×32. The codec is libjpeg on the CPU
    whatever the device: inputs on any device are copied to the CPU, outputs are CPU uint8."""

    def __init__(self, quality: int | str = 50, device: str | torch.device = "cpu", precision: str = "fp32",
                 **_: Any):
        quality = int(quality)
        if not 1 <= quality <= 95:
            raise ValueError(f"JPEG quality must be in 1..95 (PIL's useful range), got {quality}; e.g. jpeg-q50")
        self.quality = quality
        self.name = f"jpeg-q{quality}"
        self.to(device, precision)

    def to(self, device: str | torch.device, precision: str | None = None) -> "JpegSpace":
        """Record the execution (the codec itself always runs on the CPU); returns self."""
        self.device = resolve_device(device)
        self.precision = check_precision(precision or getattr(self, "precision", "fp32"))
        return self

    def encode(self, x_uint8: torch.Tensor, seeds: torch.Tensor) -> list[bytes]:
        """One JPEG byte string per image."""
        return [jpeg_encode(img.permute(1, 2, 0).numpy(), self.quality) for img in x_uint8.cpu()]

    def decode(self, z: list[bytes], seeds: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Decode byte strings to uint8 NCHW."""
        arrays = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in z]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()

    def reconstruct(self, x_uint8: torch.Tensor, seeds: torch.Tensor) -> Reconstruction:
        """Encode, decode, count bits."""
        z = self.encode(x_uint8, seeds)
        bits = {"total": np.array([8.0 * len(b) for b in z]),
                "entropy": np.array([8.0 * entropy_coded_bytes(b) for b in z])}
        return Reconstruction(self.decode(z, seeds), bits)

    def info(self) -> SpaceInfo:
        """Codec and version; the "latents" are JPEG bytes, so no stage-2 model can learn them."""
        return SpaceInfo(name=self.name, latent_channels=None, downsample_factor=1, params={"total": 0},
                         stochastic_decoder=False, decoder_evals=0, rate="exact",
                         provenance={"codec": "PIL JPEG baseline, 4:2:0", "quality": self.quality,
                                     "pillow": PIL.__version__})
