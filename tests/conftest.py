"""Shared fixtures: a usable Inception weights file (kaiming re-init) and small image folders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(2)


def write_pngs(folder: Path, images: torch.Tensor, prefix: str = "img") -> Path:
    """Save uint8 NCHW images as PNGs named in index order."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{prefix}{i:05d}.png")
    return folder


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory) -> str:
    """torch-fidelity's Inception architecture, convs re-initialised kaiming-normal (PyTorch's default init
    collapses its features, ENVIRONMENT.md), saved as a state dict the real loading code reads."""
    path = tmp_path_factory.mktemp("weights") / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(kaiming_inception_state(), path)
    return str(path)


def kaiming_inception_state() -> dict[str, torch.Tensor]:
    """Build the architecture without its download (loading stubbed), re-init convs kaiming-normal (fan_in)."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    orig_load, orig_url = torch.nn.Module.load_state_dict, fe.load_state_dict_from_url
    fe.load_state_dict_from_url = lambda *a, **k: {}
    torch.nn.Module.load_state_dict = lambda self, sd, strict=True, assign=False: None
    try:
        model = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    finally:
        torch.nn.Module.load_state_dict, fe.load_state_dict_from_url = orig_load, orig_url
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * np.sqrt(2.0 / m.weight[0].numel()))
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="session")
def eval_images() -> torch.Tensor:
    """The embedded eval split at 32×32."""
    from ulbench.data.embedded import embedded_photos

    return embedded_photos("eval", 32).images


@pytest.fixture(scope="session")
def two_folders(tmp_path_factory, eval_images) -> tuple[str, str]:
    """16 embedded eval images and 16 noisy, blurred others, as PNG folders."""
    import torchvision.transforms.functional as TF

    root = tmp_path_factory.mktemp("folders")
    g = torch.Generator().manual_seed(1)
    a = eval_images[::43][:16]
    b = TF.gaussian_blur(eval_images[7::43][:16], 5, 1.2)
    b = (b.float() + 6 * torch.randn(b.shape, generator=g)).round().clamp(0, 255).to(torch.uint8)
    return str(write_pngs(root / "a", a)), str(write_pngs(root / "b", b))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Keep caches and weights lookups of a test inside its tmp dir."""
    monkeypatch.setenv("ULBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ULBENCH_WEIGHTS_DIR", raising=False)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


# A UL config small enough for few-second training tests (shared by the stage-1 test files).
TINY_UL = dict(resolution=16, encoder_channels=(8, 16), prior_channels=(16,), decoder_channels=(16,), emb_dim=16,
               steps=8, batch_size=4, warmup_steps=2, eval_every=4, checkpoint_every=3, eval_images=4, eval_draws=4,
               decode_steps=3, num_threads=1)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: on the shared 2-core machine two OpenMP threads run many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def checkpoint_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a run's checkpoint.safetensors."""
    from safetensors import safe_open

    with safe_open(str(run_dir / "checkpoint.safetensors"), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}
