"""LPIPS through the lpips package: a local AlexNet trunk loads offline; a random trunk is labelled."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from baselines.jpeg import JpegSpace
from ulbench.metrics.lpips_metric import ALEXNET_FILE, LPIPS, build_lpips, lpips_reference
from ulbench.protocols import Batch


@pytest.fixture(scope="module")
def trunk_file(tmp_path_factory):
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("w") / ALEXNET_FILE
    torch.save(torchvision.models.alexnet().state_dict(), path)
    return path


def test_local_trunk_matches_lpips_with_same_weights(trunk_file, eval_images):
    import lpips

    x = eval_images[:6]
    y = JpegSpace(10).reconstruct(x, torch.arange(6)).x_hat
    metric = LPIPS(lpips_weights=str(trunk_file))
    metric.update(Batch(indices=np.arange(6), x_real=x, x_fake=y))
    ours = metric.compute()["lpips"].value
    ref_model = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    state = torch.load(trunk_file, weights_only=True)
    for _name, module in ref_model.net.named_children():
        for idx, layer in module.named_children():
            if isinstance(layer, torch.nn.Conv2d):
                layer.weight.data.copy_(state[f"features.{idx}.weight"])
                layer.bias.data.copy_(state[f"features.{idx}.bias"])
    ref = lpips_reference(x, y, ref_model.eval()).mean()
    assert ours == pytest.approx(ref, rel=1e-6)
    assert metric.provenance()["lpips_backbone"] == "pretrained" and ours > 0


def test_missing_trunk_is_clear_and_random_is_labelled(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match=ALEXNET_FILE):
        build_lpips("pretrained")
    metric = LPIPS(lpips_backbone="random")
    assert "not LPIPS" in metric.label and "NOT LPIPS" in metric.provenance()["lpips_backbone"]
