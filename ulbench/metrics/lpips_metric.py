"""LPIPS (Zhang et al. 2018) through the `lpips` package; the AlexNet trunk loads from a local file offline."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ulbench.device import autocast, check_precision, resolve_device
from ulbench.metrics.base import PerImageMean
from ulbench.metrics.features import sha256_file
from ulbench.protocols import Batch

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's ImageNet AlexNet, the LPIPS trunk
ALEXNET_URL = "https://download.pytorch.org/models/" + ALEXNET_FILE


def find_alexnet_weights(weights: str | None = None) -> Path | None:
    """The AlexNet trunk: --lpips-weights, $ULBENCH_WEIGHTS_DIR, or torchvision's hub cache; None if absent."""
    candidates = [Path(weights)] if weights else []
    if os.environ.get("ULBENCH_WEIGHTS_DIR"):
        candidates.append(Path(os.environ["ULBENCH_WEIGHTS_DIR"]) / ALEXNET_FILE)
    candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE)
    return next((p for p in candidates if p.is_file()), None)


def build_lpips(backbone: str = "pretrained", weights: str | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """An lpips.LPIPS(net='alex') with its trunk from a local file, or a random trunk when asked (not LPIPS)."""
    import lpips

    if backbone not in ("pretrained", "random"):
        raise ValueError(f"lpips backbone must be 'pretrained' or 'random', got {backbone!r}")
    path = find_alexnet_weights(weights) if backbone == "pretrained" else None
    if backbone == "pretrained" and path is None:
        raise FileNotFoundError(
            f"LPIPS needs the AlexNet trunk {ALEXNET_FILE} (download it from {ALEXNET_URL} on a machine with "
            f"internet; put it in $ULBENCH_WEIGHTS_DIR or pass --lpips-weights PATH). Offline you may pass "
            f"--lpips-backbone random, which is labelled 'not LPIPS'."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)  # the random trunk is reproducible
        model = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    if path is not None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        trunk = {}
        for slice_name, module in model.net.named_children():
            for idx, _ in module.named_children():
                for p in ("weight", "bias"):
                    if f"features.{idx}.{p}" in state:
                        trunk[f"{slice_name}.{idx}.{p}"] = state[f"features.{idx}.{p}"]
        model.net.load_state_dict(trunk)
    model.eval().requires_grad_(False)
    prov = {"lpips_net": "alex", "lpips_version": "0.1",
            "lpips_backbone": "pretrained" if path else "random (seed 0): NOT LPIPS",
            "lpips_backbone_sha256": sha256_file(str(path)) if path else None}
    return model, prov


class LPIPS(PerImageMean):
    """Mean per-image LPIPS distance of reconstructions to originals (inputs scaled to [−1, 1]); the network runs
    on `device` under autocast(`precision`), the per-image scores are kept in float64 on the CPU."""

    name, label, higher_is_better = "lpips", "LPIPS", False
    needs = frozenset({"real", "fake"})

    def __init__(self, lpips_backbone: str = "pretrained", lpips_weights: str | None = None,
                 device: str | torch.device = "cpu", precision: str = "fp32", **_: Any):
        self.model, self._prov = build_lpips(lpips_backbone, lpips_weights)
        if lpips_backbone == "random":
            self.label = "LPIPS [random trunk: not LPIPS]"
        self.precision = "fp32"
        self.to(device, precision)
        super().__init__()

    def to(self, device: str | torch.device, precision: str | None = None) -> "LPIPS":
        """Run the network on `device` under autocast(`precision`); returns self."""
        self.device = resolve_device(device)
        self.precision = check_precision(precision or self.precision)
        self.model.to(self.device)
        return self

    def distances(self, x_uint8: torch.Tensor, y_uint8: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS of two uint8 batches on the metric's device (a float tensor there)."""
        a = x_uint8.to(self.device, non_blocking=True).float() / 127.5 - 1
        b = y_uint8.to(self.device, non_blocking=True).float() / 127.5 - 1
        with autocast(self.device, self.precision):
            return self.model(a, b).flatten().float()

    @torch.no_grad()
    def update(self, batch: Batch) -> None:
        """Add per-image distances."""
        self.add_scores(self.distances(batch.x_real, batch.x_fake).double().cpu().numpy())

    def provenance(self) -> dict[str, Any]:
        """Trunk weights and version (and the precision when reduced)."""
        return {**self._prov, **({"lpips_precision": self.precision} if self.precision != "fp32" else {})}


def lpips_reference(x: torch.Tensor, y: torch.Tensor, model: torch.nn.Module) -> np.ndarray:
    """Per-image distances straight from an lpips model (used by tests and benchmarks)."""
    with torch.no_grad():
        return model(x.float() / 127.5 - 1, y.float() / 127.5 - 1).flatten().double().numpy()
