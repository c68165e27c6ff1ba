"""`ulbench fid` inputs: ADM .npz sample batches (also as an eval dataset), --skip-bad, --out rows, and cached
references whose sidecar must match the run (proxy detector: fast, offline)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import write_pngs
from ulbench.cli import main


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, eval_images):
    """Folder A, the same images as ADM batches (stored and compressed, with labels), folder B."""
    root = tmp_path_factory.mktemp("npz")
    a, b = eval_images[:40:2], eval_images[300:340:2]
    nhwc = a.permute(0, 2, 3, 1).numpy()
    np.savez(root / "a.npz", arr_0=nhwc, arr_1=np.arange(len(nhwc)) % 4)
    np.savez_compressed(root / "a_compressed.npz", arr_0=nhwc)
    return {"a": str(write_pngs(root / "a", a)), "b": str(write_pngs(root / "b", b)), "root": root,
            "npz": str(root / "a.npz"), "npz_c": str(root / "a_compressed.npz"), "nhwc": nhwc}


def _fid(*args):
    res = CliRunner().invoke(main, ["fid", *args, "--detector", "proxy", "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def _error(args) -> str:
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and res.stderr.startswith("error: ")
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    return res.stderr


def test_adm_npz_equals_the_folder(inputs):
    folder = _fid(inputs["a"], inputs["b"], "--prc", "--kid")
    for spec in (inputs["npz"], inputs["npz_c"]):  # memmapped (stored) and loaded (compressed) members
        out = _fid(spec, inputs["b"], "--prc", "--kid")
        assert out["n_a"] == 20 and out["fid"] == pytest.approx(folder["fid"], rel=1e-12)
        assert (out["precision"], out["recall"], out["kid"]) == (folder["precision"], folder["recall"], folder["kid"])
    assert _fid(inputs["b"], inputs["npz"])["fid"] > 0  # either side may be a batch
    assert _fid(inputs["npz"], inputs["npz_c"])["fid"] == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize("arrays, expect", [
    ({"arr_0": "float"}, "arr_0 is float32"),
    ({"arr_0": "nchw"}, "expected uint8 (N, H, W, 3)"),
    ({"images": "ok"}, "found arrays ['images']"),
    ({"arr_0": "ok", "arr_1": "2d"}, "arr_1 is int64 (20, 2)"),
])
def test_bad_npz_is_one_error_line(inputs, tmp_path, arrays, expect):
    x = inputs["nhwc"]
    make = {"float": x.astype(np.float32), "nchw": x.transpose(0, 3, 1, 2).copy(), "ok": x,
            "2d": np.zeros((len(x), 2), np.int64)}
    np.savez(tmp_path / "bad.npz", **{k: make[v] for k, v in arrays.items()})
    msg = _error(["fid", str(tmp_path / "bad.npz"), inputs["b"], "--detector", "proxy"])
    assert expect in msg and "bad.npz" in msg
    assert "not a readable .npz" in _error(["fid", str(tmp_path / "missing.npz"), inputs["b"], "--detector", "proxy"])


def test_eval_reads_an_npz_dataset(inputs):
    for spec in (f"npz:{inputs['npz']}", inputs["npz"]):
        res = CliRunner().invoke(main, ["eval", "--space", "jpeg-q50", "--data", spec, "--metrics", "psnr", "--json"])
        assert res.exit_code == 0, res.output
        row = json.loads(res.stdout.splitlines()[0])
        assert row["n"] == 20 and row["provenance"]["dataset"] == "npz:a.npz" and 20 < row["value"] < 60
        assert row["provenance"]["num_classes"] == 4  # arr_1 labels were read


def test_skip_bad_and_out_rows(inputs, tmp_path):
    bad = tmp_path / "samples"
    bad.mkdir()
    for p in Path(inputs["a"]).iterdir():
        (bad / p.name).write_bytes(p.read_bytes())
    (bad / "img99999.png").write_bytes(b"\x89PNG truncated")
    assert "img99999.png" in _error(["fid", str(bad), inputs["b"], "--detector", "proxy"])
    res = CliRunner().invoke(main, ["fid", str(bad), inputs["b"], "--detector", "proxy", "--skip-bad", "--prc",
                                    "--out", str(tmp_path / "res")])
    assert res.exit_code == 0, res.output
    assert "skipped 1 unreadable file(s)" in res.stderr and "img99999.png" in res.stderr
    rows = {r["metric"]: r for r in map(json.loads, (tmp_path / "res" / "results.jsonl").read_text().splitlines())}
    assert set(rows) == {"fid", "precision", "recall"}
    prov = rows["fid"]["provenance"]
    assert rows["fid"]["n"] == prov["n"] == 20 and rows["fid"]["proxy"] and rows["fid"]["label"] == "FID [proxy]"
    assert prov["detector"] == "proxy" and len(prov["detector_weights_sha256"]) == 64 and prov["resize"]
    assert prov["a"]["fingerprint"] and prov["reference"]["fingerprint"] and prov["resolution"] == 32
    assert prov["skipped_bad_files"]["a"] == ["img99999.png"]
    assert rows["recall"]["label"] == "recall[proxy]"


def test_cached_reference_must_match(inputs, tmp_path):
    res = CliRunner().invoke(main, ["ref", "--data", f"folder:{inputs['b']}", "--split", "all", "--resolution", "32",
                                    "--detector", "proxy", "--cache-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    ref = res.stdout.strip().splitlines()[-1]
    same = _fid(inputs["npz"], ref, "--ref-n", "20")
    assert same["fid"] == pytest.approx(_fid(inputs["npz"], inputs["b"])["fid"], rel=1e-9)
    args = ["fid", inputs["npz"], ref, "--detector", "proxy"]
    assert "n: reference 20, asked 16" in _error(args + ["--ref-n", "16"])
    assert "resolution: reference 32, this run 16" in _error(args + ["--resolution", "16"])
    assert "--kid needs the reference images" in _error(args + ["--kid"])
    sidecar = Path(ref).with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "detector": "inception-v3-compat", "resize": "tf1-bilinear-299"}))
    msg = _error(args)
    assert "detector: reference 'inception-v3-compat', this run 'proxy'" in msg and "resize:" in msg
