"""The proxy detector is sensitive and labelled; compare refuses mixed provenance."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision.transforms.functional as TF
from click.testing import CliRunner

from ulbench.cli import main
from ulbench.evaluation import fid_between
from ulbench.metrics.features import ProxyDetector


@pytest.fixture(scope="module")
def proxy_setup(eval_images):
    det = ProxyDetector()
    return det, eval_images, det.features(eval_images)


def test_proxy_fid_rises_with_blur(proxy_setup):
    det, x, ref = proxy_setup
    fids = [fid_between(det.features(TF.gaussian_blur(x, 9, s)), ref)["fid"] for s in (0.5, 1.0, 1.5, 2.0, 3.0)]
    assert all(a < b for a, b in zip(fids, fids[1:])), fids


def test_proxy_fid_rises_with_noise(proxy_setup):
    det, x, ref = proxy_setup
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(x.shape, generator=g)
    fids = []
    for s in (2, 5, 10, 20, 40):
        noisy = (x.float() + s * eps).round().clamp(0, 255).to(torch.uint8)
        fids.append(fid_between(det.features(noisy), ref)["fid"])
    assert all(a < b for a, b in zip(fids, fids[1:])), fids


def test_proxy_is_deterministic_and_labelled(eval_images):
    a, b = ProxyDetector(), ProxyDetector()
    assert (a.features(eval_images[:8]) == b.features(eval_images[:8])).all()
    assert a.provenance()["proxy"] is True and a.provenance()["detector"] == "proxy"


def _eval(tmp_path, name, space, *extra):
    out = tmp_path / name
    res = CliRunner().invoke(main, ["eval", "--space", space, "--metrics", "rfid,psnr,bpp", "--detector", "proxy",
                                    "--limit", "64", "--out", str(out), *extra])
    assert res.exit_code == 0, res.output
    return out / "results.jsonl"


def test_eval_rows_carry_provenance_and_proxy_label(tmp_path):
    path = _eval(tmp_path, "j", "jpeg-q50")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    fid = next(r for r in rows if r["metric"] == "rfid")
    assert fid["proxy"] is True and "[proxy]" in fid["label"]
    prov = fid["provenance"]
    for key in ("detector", "detector_weights_sha256", "resize", "n", "seed", "split", "dataset", "config_hash",
                "git_sha", "packages", "wall_time_s", "world_size"):
        assert key in prov, key


def test_compare_same_protocol_and_refusal(tmp_path):
    a = _eval(tmp_path, "a", "jpeg-q50")
    b = _eval(tmp_path, "b", "pixel")
    res = CliRunner().invoke(main, ["compare", str(a), str(b)])
    assert res.exit_code == 0, res.output
    assert "jpeg-q50" in res.output and "pixel" in res.output and "[proxy]" in res.output
    c = _eval(tmp_path, "c", "jpeg-q10", "--split", "train")
    res = CliRunner().invoke(main, ["compare", str(a), str(c)])
    assert res.exit_code == 2
    assert "refusing to compare" in res.output and "split differs" in res.output
