"""`ulbench prepare imagenet`: ADM centre crops of an ImageNet-layout folder into PNGs + labels, in parallel,
resumable, with bad files reported (edm2 `dataset_tool.py` output layout)."""

from __future__ import annotations

import io
import json
import os
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

from ulbench.data.folder import BadImageError, adm_center_crop, decode_image, list_images
from ulbench.results import atomic_write_text


def list_source(src: Path, broken: list[str] | None = None) -> list[tuple[str, int]]:
    """(relative path, label) of every image; labels are sorted class folder names (ImageNet layout). Broken
    symlinks (target missing) are left out and appended to `broken`."""
    files, dangling = list_images(src)
    if broken is not None:
        broken += dangling
    classes = sorted({f.split("/")[0] for f in files if "/" in f})
    index = {c: i for i, c in enumerate(classes)}
    return [(f, index.get(f.split("/")[0], 0) if "/" in f else 0) for f in files]


def _out_name(i: int) -> str:
    return f"{i // 1000:05d}/img{i:08d}.png"


def _crop_one(args: tuple[str, str, int, str]) -> tuple[str, str | None]:
    """Crop one image to a PNG written atomically; returns (name, error or None)."""
    src, rel, resolution, dst = args
    try:
        arr = adm_center_crop(decode_image(Path(src, rel).read_bytes(), str(Path(src, rel))), resolution)
    except BadImageError as e:
        return rel, str(e)
    path = Path(dst)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    tmp = path.with_suffix(".png.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)
    return rel, None


def prepare_imagenet(src: str, out: str, resolution: int = 512, workers: int = 2, as_zip: bool = False,
                     progress: bool = True) -> dict[str, Any]:
    """Crop every image of `src` to `resolution`² PNGs under `out` (or out.zip, stored uncompressed), with
    `dataset.json` labels; existing outputs are kept (resume); bad files are listed in `bad_files.json`."""
    from tqdm import tqdm

    src_path, out_path = Path(src), Path(out)
    if not src_path.is_dir():
        raise ValueError(f"--src {src!r} is not a folder (expected ImageNet layout: one sub-folder per class)")
    if resolution < 8:
        raise ValueError(f"--resolution must be >= 8, got {resolution}")
    broken: list[str] = []
    items = list_source(src_path, broken)
    if not items:
        raise ValueError(f"{src}: no images found")
    folder = out_path.with_suffix("") if as_zip else out_path
    folder.mkdir(parents=True, exist_ok=True)
    todo = [(str(src_path), rel, resolution, str(folder / _out_name(i))) for i, (rel, _) in enumerate(items)
            if not (folder / _out_name(i)).exists()]
    bad: dict[str, str] = {}
    bad_path = folder / "bad_files.json"
    if bad_path.exists():
        bad = json.loads(bad_path.read_text())
        todo = [t for t in todo if t[1] not in bad]
    bad.update({rel: "broken symlink: its target is missing" for rel in broken})  # counted, not dropped
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for rel, err in tqdm(pool.map(_crop_one, todo, chunksize=16), total=len(todo), desc="prepare",
                             disable=not progress):
            if err:
                bad[rel] = err
    atomic_write_text(bad_path, json.dumps(bad, indent=1, sort_keys=True))
    labels = [[_out_name(i), label] for i, (rel, label) in enumerate(items) if rel not in bad]
    meta = {"labels": labels, "source": str(src_path), "resolution": resolution,
            "preprocess": "ADM centre crop (box-halve while short side >= 2*res, bicubic, centre crop)",
            "classes": sorted({r.split("/")[0] for r, _ in items if "/" in r})}
    atomic_write_text(folder / "dataset.json", json.dumps(meta))
    result = {"images": len(labels), "bad_files": len(bad), "new": len(todo), "out": str(folder)}
    if as_zip:
        zpath = out_path.with_suffix(".zip")
        tmp = zpath.with_suffix(".zip.tmp")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
            for name, _ in labels:
                z.write(folder / name, name)
            z.write(folder / "dataset.json", "dataset.json")
        os.replace(tmp, zpath)
        result["out"] = str(zpath)
    return result
