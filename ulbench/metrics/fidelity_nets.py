"""torch-fidelity 0.4.0's other extractors in the detector slot, from weights the user brings: FD-DINOv2, FD-CLIP.

Both keep torch-fidelity's own forward (uint8 in; TF1-bilinear resize to 224 (CLIP: the model's resolution);
ImageNet (DINOv2) or CLIP mean/std), so features equal `torch_fidelity.calculate_metrics(feature_extractor=...)`.
Offline, as measured in 0.4.0:
- CLIP (`feature_extractor_clip.py`) takes `feature_extractor_weights_path`: OpenAI's TorchScript `.pt`
  (e.g. ViT-B-32.pt), read with `torch.jit.load`, no network.
- DINOv2 (`feature_extractor_dinov2.py`) raises NotImplementedError for a weights path and otherwise calls
  `torch.hub.load("facebookresearch/dinov2", ...)`, which needs GitHub. Here the network is built from a local copy
  of the facebookresearch/dinov2 hub code (`$ULBENCH_DINOV2_REPO`, else torch.hub's cached
  `facebookresearch_dinov2_main`) with `pretrained=False`, the weights file (`dinov2_vits14_pretrain.pth`, ...) is
  loaded strictly with `weights_only=True`, and torch-fidelity's extractor is assembled around it.
"""

from __future__ import annotations

import os
import sys
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import torch

from ulbench.metrics.features import Detector, sha256_file

DINOV2_FILES = {"dinov2-vit-s-14": "dinov2_vits14_pretrain.pth", "dinov2-vit-b-14": "dinov2_vitb14_pretrain.pth",
                "dinov2-vit-l-14": "dinov2_vitl14_pretrain.pth", "dinov2-vit-g-14": "dinov2_vitg14_pretrain.pth"}
DINOV2_URL = "https://dl.fbaipublicfiles.com/dinov2/"  # + dinov2_vits14/dinov2_vits14_pretrain.pth


def _find(weights: str | None, names: list[str], what: str, hint: str) -> Path:
    """--weights, else each of `names` in $ULBENCH_WEIGHTS_DIR and torch.hub's checkpoints."""
    if weights:
        candidates = [Path(weights)]
    else:
        folders = [Path(d) for d in (os.environ.get("ULBENCH_WEIGHTS_DIR"),) if d]
        folders.append(Path(torch.hub.get_dir()) / "checkpoints")
        candidates = [f / n for f in folders for n in names]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"{what} weights not found (looked at: {', '.join(map(str, candidates))}). {hint} "
                            f"Pass --weights PATH or put the file in $ULBENCH_WEIGHTS_DIR.")


class FidelityNetDetector(Detector):
    """A torch-fidelity feature extractor (`self.model`, uint8 in, features out) with the user's weights."""

    feature = ""

    def _move(self, device: torch.device) -> None:
        self.model.to(device)

    def forward(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """torch-fidelity's features of uint8 images on the detector's device."""
        return self.model(x_uint8)[0]

    def provenance(self) -> dict[str, Any]:
        """Network, weights file and hash, torch-fidelity's resize."""
        return {"detector": self.name, "detector_network": self.network,
                "detector_weights": os.path.basename(self.weights_path),
                "detector_weights_sha256": sha256_file(self.weights_path),
                "resize": f"torch-fidelity tf1-bilinear-{self.resolution}", "feature_dim": self.dim, "proxy": False,
                **self.precision_provenance()}


class ClipDetector(FidelityNetDetector):
    """CLIP image embeddings (Radford et al. 2021) via torch-fidelity: FD-CLIP. `name`: clip-vit-b-32, clip-rn50..."""

    network = "CLIP"

    def __init__(self, variant: str = "clip-vit-b-32", weights: str | None = None, **_: Any):
        from torch_fidelity.feature_extractor_clip import MODEL_METADATA, FeatureExtractorCLIP

        if variant not in MODEL_METADATA:
            raise ValueError(f"unknown CLIP variant {variant!r}; torch-fidelity 0.4.0 has {', '.join(MODEL_METADATA)}")
        meta = MODEL_METADATA[variant]
        path = _find(weights, [f"{meta['filename']}.pt", f"{variant}-{meta['hash']}.pt"], f"CLIP {variant}",
                     f"Download {meta['filename']}.pt (OpenAI's TorchScript archive) on a machine with internet.")
        self.name, self.weights_path = variant, str(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                self.model = FeatureExtractorCLIP(variant, ["clip"], feature_extractor_weights_path=str(path))
            except Exception as e:
                raise ValueError(f"{path}: not a CLIP TorchScript archive torch-fidelity can read "
                                 f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        self.model.eval().requires_grad_(False)
        visual = self.model.model.visual
        self.resolution = self.model.resolution
        self.dim = int(visual.proj.shape[1]) if getattr(visual, "proj", None) is not None \
            else int(visual.attnpool.c_proj.out_features)


def _dinov2_repo() -> Path:
    repo = os.environ.get("ULBENCH_DINOV2_REPO")
    candidates = [Path(repo)] if repo else []
    candidates.append(Path(torch.hub.get_dir()) / "facebookresearch_dinov2_main")
    for path in candidates:
        if (path / "hubconf.py").is_file():
            return path
    raise FileNotFoundError(
        f"DINOv2 needs the facebookresearch/dinov2 hub code locally (looked at: {', '.join(map(str, candidates))}): "
        f"torch-fidelity 0.4.0 cannot take a weights path for DINOv2 (NotImplementedError) and fetches the code from "
        f"GitHub. `git clone https://github.com/facebookresearch/dinov2` on a machine with internet and set "
        f"$ULBENCH_DINOV2_REPO to it.")


class DinoV2Detector(FidelityNetDetector):
    """DINOv2 CLS features (Oquab et al. 2023) via torch-fidelity's extractor: FD-DINOv2 (Stein et al. 2023)."""

    network = "DINOv2"
    resolution = 224

    def __init__(self, variant: str = "dinov2-vit-s-14", weights: str | None = None, **_: Any):
        from torch_fidelity.feature_extractor_base import FeatureExtractorBase
        from torch_fidelity.feature_extractor_dinov2 import MODEL_METADATA, FeatureExtractorDinoV2

        if variant not in MODEL_METADATA:
            raise ValueError(f"unknown DINOv2 variant {variant!r}; torch-fidelity 0.4.0 has "
                             f"{', '.join(MODEL_METADATA)}")
        path = _find(weights, [DINOV2_FILES[variant]], f"DINOv2 {variant}",
                     f"Download {DINOV2_URL}{MODEL_METADATA[variant]}/{DINOV2_FILES[variant]} on a machine with "
                     f"internet.")
        repo = _dinov2_repo()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{path}: not a readable DINOv2 state dict ({type(e).__name__}: {e})") from e
        os.environ.setdefault("XFORMERS_DISABLED", "1")  # as torch-fidelity: plain PyTorch attention
        with redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = torch.hub.load(str(repo), MODEL_METADATA[variant], source="local", pretrained=False)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(f"{path}: not a {variant} state dict: {str(e).splitlines()[0]}") from None
        # torch-fidelity's extractor minus its GitHub download: same forward (resize, normalise, model)
        extractor = FeatureExtractorDinoV2.__new__(FeatureExtractorDinoV2)
        FeatureExtractorBase.__init__(extractor, variant, ["dinov2"])
        extractor.feature_extractor_internal_dtype = torch.float32
        extractor.model = net
        self.model = extractor.to(torch.float32).eval().requires_grad_(False)
        self.name, self.weights_path = variant, str(path)
        self.dim = int(getattr(net, "embed_dim", 0) or getattr(net, "num_features", 0))
