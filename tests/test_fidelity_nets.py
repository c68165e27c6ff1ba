"""torch-fidelity's CLIP and DINOv2 extractors in the detector slot, from local weights only (random-initialised
files, as the Inception tests): features equal torch-fidelity's own, labels say FD-CLIP / FD-DINOv2, never FID."""

from __future__ import annotations

import json
import textwrap
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ulbench.cli import main


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory) -> str:
    """A small CLIP ViT (width 64, 2 layers, patch 32, 224 px) saved as OpenAI's TorchScript archives are."""
    from torch_fidelity.feature_extractor_clip import CLIPVisual

    class Clip(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = CLIPVisual(32, 224, 2, 64, 32).visual
            self.text_projection = torch.nn.Parameter(torch.randn(64, 32))

        def forward(self, x):
            return self.visual(x)

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip") / "ViT-B-32.pt"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings of nn.MultiheadAttention's shape checks
        torch.jit.trace(Clip().eval(), torch.randn(1, 3, 224, 224)).save(str(path))
    return str(path)


def test_clip_detector_equals_torch_fidelity_and_is_labelled(clip_weights, eval_images, two_folders):
    from torch_fidelity.feature_extractor_clip import FeatureExtractorCLIP

    from ulbench.metrics.features import build_detector, metric_label

    det = build_detector("clip-vit-b-32", clip_weights)
    x = eval_images[:6]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation, inside torch-fidelity
        ref = FeatureExtractorCLIP("clip-vit-b-32", ["clip"], feature_extractor_weights_path=clip_weights)(x)[0]
    got = det.features(x)
    assert got.shape == (6, 32) and det.dim == 32 and got.std() > 0
    np.testing.assert_allclose(got, ref.double().numpy(), rtol=1e-6, atol=1e-6)
    assert metric_label("rfid", det) == "rFD-CLIP" and det.provenance()["detector_network"] == "CLIP"
    res = CliRunner().invoke(main, ["fid", *two_folders, "--detector", "clip-vit-b-32", "--weights", clip_weights,
                                    "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["label"] == "FD-CLIP" and out["fid"] > 0 and len(out["provenance"]["detector_weights_sha256"]) == 64


TINY_DINOV2_HUBCONF = '''
import torch

class TinyViT(torch.nn.Module):
    """Stands in for dinov2_vits14: patch embedding + mean token, `embed_dim` like DINOv2's DinoVisionTransformer."""

    def __init__(self):
        super().__init__()
        self.embed_dim = 24
        self.patch_embed = torch.nn.Conv2d(3, 24, 14, 14)
        self.norm = torch.nn.LayerNorm(24)

    def forward(self, x):
        return self.norm(self.patch_embed(x).flatten(2).mean(-1))

def dinov2_vits14(pretrained=True, **kwargs):
    assert not pretrained, "the detector must not ask for a download"
    return TinyViT()
'''


def test_dinov2_from_local_code_and_weights_equals_torch_fidelity_forward(tmp_path, monkeypatch, eval_images):
    """torch-fidelity 0.4.0 refuses a DINOv2 weights path (NotImplementedError); ours loads the hub code locally
    (pretrained=False) and the weights strictly, then runs torch-fidelity's forward (resize + ImageNet norm)."""
    from torch_fidelity.feature_extractor_dinov2 import FeatureExtractorDinoV2

    from ulbench.metrics.features import build_detector, metric_label

    with pytest.raises(NotImplementedError):  # if torch-fidelity learns local weights, use its path instead
        FeatureExtractorDinoV2("dinov2-vit-s-14", ["dinov2"], feature_extractor_weights_path=str(tmp_path / "w"))
    repo = tmp_path / "dinov2"
    repo.mkdir()
    (repo / "hubconf.py").write_text(textwrap.dedent(TINY_DINOV2_HUBCONF))
    monkeypatch.setenv("ULBENCH_DINOV2_REPO", str(repo))
    monkeypatch.syspath_prepend(str(repo))
    import hubconf

    torch.manual_seed(0)
    net = hubconf.dinov2_vits14(pretrained=False)
    weights = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(net.state_dict(), weights)
    det = build_detector("dinov2-vit-s-14", str(weights))
    x = eval_images[:5]
    # torch-fidelity's own forward with the same network (its hub download replaced by our local module)
    monkeypatch.setattr(torch.hub, "load", lambda *a, **k: net)
    ref = FeatureExtractorDinoV2("dinov2-vit-s-14", ["dinov2"])(x)[0]
    np.testing.assert_allclose(det.features(x), ref.double().numpy(), rtol=1e-6, atol=1e-6)
    assert det.dim == 24 and metric_label("gfid", det) == "gFD-DINOv2"
    assert det.provenance()["detector_weights"] == "dinov2_vits14_pretrain.pth"
    bad = {**net.state_dict(), "extra": torch.zeros(1)}
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a dinov2-vit-s-14 state dict"):
        build_detector("dinov2-vit-s-14", str(tmp_path / "bad.pth"))


def test_dinov2_without_local_code_says_what_to_do(tmp_path, monkeypatch):
    from ulbench.metrics.features import build_detector

    weights = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save({}, weights)
    monkeypatch.setenv("ULBENCH_DINOV2_REPO", str(tmp_path / "nothing"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="ULBENCH_DINOV2_REPO"):
        build_detector("dinov2-vit-s-14", str(weights))
