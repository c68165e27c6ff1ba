"""`ulbench prepare imagenet`: bit-exact ADM centre crops, labels, resume, bad files (issue 7)."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from ulbench.cli import main


def adm_reference_crop(pil_image: Image.Image, image_size: int) -> np.ndarray:
    """guided_diffusion/image_datasets.py `center_crop_arr`, transcribed as the independent reference."""
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image)
    crop_y = (arr.shape[0] - image_size) // 2
    crop_x = (arr.shape[1] - image_size) // 2
    return arr[crop_y: crop_y + image_size, crop_x: crop_x + image_size]


def _make_src(root):
    rng = np.random.default_rng(0)
    sizes = [(37, 53), (129, 64), (200, 333), (64, 64), (91, 250)]
    for i, (h, w) in enumerate(sizes):
        cls = ["n02", "n01"][i % 2]
        (root / cls).mkdir(parents=True, exist_ok=True)
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([(xx * 255 / w), (yy * 255 / h), rng.uniform(0, 255, (h, w))], -1).astype(np.uint8)
        Image.fromarray(img).save(root / cls / f"im{i}.JPEG", quality=90)
    (root / "n01" / "broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


def test_prepare_matches_adm_reference_and_resumes(tmp_path):
    src = _make_src(tmp_path / "src")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["prepare", "imagenet", "--src", str(src), "--out", str(out),
                                    "--resolution", "32", "--workers", "2", "--zip"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["images"] == 5 and summary["bad_files"] == 1
    meta = json.loads((out / "dataset.json").read_text())
    bad = json.loads((out / "bad_files.json").read_text())
    assert list(bad) == ["n01/broken.JPEG"]
    files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.JPEG") if p.name != "broken.JPEG")
    names = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.JPEG"))
    for i, rel in enumerate(names):
        if rel == "n01/broken.JPEG":
            continue
        name, label = next(x for x in meta["labels"] if x[0].endswith(f"img{i:08d}.png"))
        ours = np.asarray(Image.open(out / name))
        ref = adm_reference_crop(Image.open(src / rel).convert("RGB"), 32)
        assert ours.shape == (32, 32, 3) and np.array_equal(ours, ref), rel
        assert label == (0 if rel.startswith("n01") else 1)
    assert len(files) == 5 and (tmp_path / "out.zip").exists()
    again = CliRunner().invoke(main, ["prepare", "imagenet", "--src", str(src), "--out", str(out),
                                      "--resolution", "32", "--workers", "1"])
    assert again.exit_code == 0 and json.loads(again.stdout)["new"] == 0
    from ulbench.data.folder import ImageFolderDataset

    ds = ImageFolderDataset(str(tmp_path / "out.zip"), split="all", resolution=32)
    x, y = ds.get(range(len(ds)))
    assert x.shape == (5, 3, 32, 32) and sorted(y.tolist()) == [0, 0, 1, 1, 1]
