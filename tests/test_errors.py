"""Bad input: clear messages, non-zero exits, nothing written half-way."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.conftest import write_pngs
from ulbench.cli import main
from ulbench.data.folder import BadImageError, ImageFolderDataset


def _invoke(args):
    return CliRunner().invoke(main, args)


@pytest.fixture()
def bad_folder(tmp_path, eval_images):
    root = write_pngs(tmp_path / "imgs" / "cls0", eval_images[:4])
    good = (root / "img00000.png").read_bytes()
    (root / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "zero.png").write_bytes(b"")
    (root / "text.png").write_text("this is not an image")
    Image.fromarray(np.zeros((32, 32), dtype=np.float32), mode="F").save(root / "float.tif")
    return tmp_path / "imgs"


@pytest.mark.parametrize("name,needle", [("truncated.png", "not a readable image"), ("zero.png", "empty file"),
                                         ("text.png", "not a readable image"), ("float.tif", "unsupported image mode")])
def test_each_bad_file_names_itself(bad_folder, name, needle):
    ds = ImageFolderDataset(str(bad_folder), split="all", resolution=32)
    i = [n.split("/")[-1] for n in ds.source.names].index(name)
    with pytest.raises(BadImageError, match=needle) as e:
        ds.get([i])
    assert name in str(e.value)


def test_bad_files_fail_eval_and_write_nothing(bad_folder, tmp_path):
    out = tmp_path / "out"
    res = _invoke(["eval", "--space", "jpeg-q50", "--data", f"folder:{bad_folder}", "--split", "all",
                   "--metrics", "psnr,bpp", "--out", str(out)])
    assert res.exit_code == 2
    assert "error:" in res.output and "float.tif" in res.output  # the first bad file in sorted order
    assert not (out / "results.jsonl").exists()


def test_skip_bad_counts_and_records(bad_folder, tmp_path):
    out = tmp_path / "out"
    res = _invoke(["eval", "--space", "jpeg-q50", "--data", f"folder:{bad_folder}", "--split", "all",
                   "--metrics", "psnr,bpp", "--skip-bad", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["n"] for r in rows} == {4}
    skipped = rows[0]["provenance"]["skipped_bad_files"]
    assert sorted(s.split("/")[-1] for s in skipped) == ["float.tif", "text.png", "truncated.png", "zero.png"]


def test_missing_weights_is_a_clear_error(tmp_path):
    res = _invoke(["eval", "--space", "pixel", "--metrics", "rfid", "--limit", "4",
                   "--weights", str(tmp_path / "nope.pth")])
    assert res.exit_code == 2
    assert "weights-inception-2015-12-05-6726825d.pth" in res.output and "--detector proxy" in res.output


def test_corrupt_weights_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    bad.write_bytes(b"\x00garbage")
    res = _invoke(["fid", str(tmp_path), str(tmp_path), "--weights", str(bad)])
    assert res.exit_code == 2 and "not a readable Inception state dict" in res.output


def test_fewer_than_two_samples(tmp_path, eval_images):
    a = write_pngs(tmp_path / "a", eval_images[:1])
    b = write_pngs(tmp_path / "b", eval_images[1:3])
    res = _invoke(["fid", str(a), str(b), "--detector", "proxy"])
    assert res.exit_code == 2 and "at least 2 samples" in res.output


@pytest.mark.parametrize("args,needle", [
    (["eval", "--space", "jpg-q50"], "Unknown space 'jpg-q50'"),
    (["eval", "--space", "pixel", "--metrics", "rfdi"], "Did you mean 'rfid'"),
    (["eval", "--space", "jpeg-q500", "--metrics", "psnr"], "quality must be in 1..95"),
    (["eval", "--space", "pixel", "--data", "imagenet"], "Unknown dataset"),
    (["eval", "--space", "pixel", "--metrics", "psnr", "--limit", "0"], "--limit must be >= 1"),
])
def test_unknown_names_and_bad_values(args, needle):
    res = _invoke(args)
    assert res.exit_code == 2 and needle in res.output, res.output


def test_zip_with_labels_and_bad_zip(tmp_path, eval_images):
    zpath = tmp_path / "d.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for i in range(3):
            import io

            buf = io.BytesIO()
            Image.fromarray(eval_images[i].permute(1, 2, 0).numpy()).save(buf, format="PNG")
            z.writestr(f"img{i}.png", buf.getvalue())
        z.writestr("dataset.json", json.dumps({"labels": [["img0.png", 2], ["img1.png", 0], ["img2.png", 1]]}))
    ds = ImageFolderDataset(str(zpath), split="all", resolution=32)
    x, y = ds.get([0, 1, 2])
    assert x.shape == (3, 3, 32, 32) and y.tolist() == [2, 0, 1]
    assert (x == eval_images[:3]).all()
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(ValueError, match="not a valid zip"):
        ImageFolderDataset(str(tmp_path / "bad.zip"))


def test_imagenet_layout_labels(tmp_path, eval_images):
    for c, cls in enumerate(["n01", "n02", "n03"]):
        write_pngs(tmp_path / "train" / cls, eval_images[c * 2:c * 2 + 2])
    ds = ImageFolderDataset(str(tmp_path), split="train", resolution=16)
    x, y = ds.get(range(len(ds)))
    assert y.tolist() == [0, 0, 1, 1, 2, 2] and x.shape == (6, 3, 16, 16) and ds.num_classes == 3


def test_atomic_append_keeps_old_rows_on_failure(tmp_path, monkeypatch):
    from ulbench import results

    path = tmp_path / "r.jsonl"
    results.append_rows(path, [results.ResultRow("r", "s", "psnr", 1.0)])
    before = path.read_text()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "fsync", boom)
    with pytest.raises(OSError):
        results.append_rows(path, [results.ResultRow("r", "s", "ssim", 0.5)])
    assert path.read_text() == before
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["run", "--help"], ["eval", "-h"]])
def test_help_exits_zero_without_error_line(args):
    """click's --help raises Exit (a RuntimeError): it must not become 'error: 0' and exit 2."""
    result = _invoke(args)
    assert result.exit_code == 0, result.output
    assert "error:" not in result.output and "Usage:" in result.output
