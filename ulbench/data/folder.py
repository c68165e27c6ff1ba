"""Real image data: ImageNet-layout folders or zips of PNGs, with the ADM centre crop (Dhariwal & Nichol 2021)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ulbench.data.base import ImageDataset

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
RGB_CONVERTIBLE_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")
FINGERPRINT_SAMPLE_FILES = 64  # files whose bytes are hashed, evenly spaced over the sorted list


class BadImageError(ValueError):
    """An image file that cannot be decoded to an RGB uint8 array; names the file."""


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Decode image bytes to uint8 HxWx3 RGB, or raise BadImageError naming the file and the problem."""
    if len(data) == 0:
        raise BadImageError(f"{name}: empty file (0 bytes); remove it or pass --skip-bad to count and skip it")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode not in RGB_CONVERTIBLE_MODES:
                raise BadImageError(f"{name}: unsupported image mode {img.mode!r} (expected one of "
                                    f"{', '.join(RGB_CONVERTIBLE_MODES)}); convert it to 8-bit RGB")
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except BadImageError:
        raise
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError (truncated), SyntaxError, ...
        raise BadImageError(f"{name}: not a readable image ({type(e).__name__}: {e}); remove it or pass "
                            f"--skip-bad to count and skip it") from e


def adm_center_crop(img: np.ndarray, resolution: int) -> np.ndarray:
    """ADM centre crop: box-halve while short side ≥ 2·res, bicubic resize short side to res, centre crop."""
    pil = Image.fromarray(img)
    while min(*pil.size) >= 2 * resolution:
        pil = pil.resize(tuple(x // 2 for x in pil.size), resample=Image.BOX)
    scale = resolution / min(*pil.size)
    pil = pil.resize(tuple(round(x * scale) for x in pil.size), resample=Image.BICUBIC)
    arr = np.asarray(pil)
    top, left = (arr.shape[0] - resolution) // 2, (arr.shape[1] - resolution) // 2
    return arr[top:top + resolution, left:left + resolution]


def list_images(root: Path) -> tuple[list[str], list[str]]:
    """Sorted relative names of the image files below `root`, and of the image-named symlinks whose target is
    missing (left out of the images, returned so that they are counted and reported, never dropped silently)."""
    names, broken = [], []
    for p in root.rglob("*"):
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if p.is_file():
            names.append(str(p.relative_to(root)))
        elif p.is_symlink() and not p.exists():
            broken.append(str(p.relative_to(root)))
    return sorted(names), sorted(broken)


class _Source:
    """Files of a folder or a zip: sorted names, bytes by name."""

    def __init__(self, root: Path):
        self.root = root
        self.is_zip = root.suffix.lower() == ".zip"
        self.broken_links: list[str] = []  # image-named symlinks whose target is missing (folders only)
        if self.is_zip:
            try:
                with zipfile.ZipFile(root) as z:
                    self.names = sorted(n for n in z.namelist() if n.lower().endswith(IMAGE_EXTENSIONS))
                    self.meta = json.loads(z.read("dataset.json")) if "dataset.json" in z.namelist() else None
            except zipfile.BadZipFile as e:
                raise ValueError(f"{root}: not a valid zip file ({e})") from e
        else:
            self.names, self.broken_links = list_images(root)
            meta = root / "dataset.json"
            self.meta = json.loads(meta.read_text()) if meta.is_file() else None
        self._zip, self._zip_pid = None, 0
        self._listing: list[tuple[str, int, int]] | None = None
        self._fingerprint: str | None = None

    def listing(self) -> list[tuple[str, int, int]]:
        """(name, size in bytes, change stamp) per image, in name order: the stamp is the mtime (ns) in a folder,
        the CRC-32 of the content in a zip (its central directory holds both, nothing is decompressed)."""
        if self._listing is None:
            if self.is_zip:
                with zipfile.ZipFile(self.root) as z:
                    infos = {i.filename: i for i in z.infolist()}
                self._listing = [(n, infos[n].file_size, infos[n].CRC) for n in self.names]
            else:
                stats = [os.stat(self.root / n) for n in self.names]
                self._listing = [(n, st.st_size, st.st_mtime_ns) for n, st in zip(self.names, stats)]
        return self._listing

    def fingerprint(self) -> str:
        """Content fingerprint (16 hex digits of sha256): sorted relative names, byte sizes (and zip CRCs), the
        labels file, and the full bytes of FINGERPRINT_SAMPLE_FILES files evenly spaced over the sorted list.
        Cheap on ImageNet-size folders (one stat per file, which listing pays anyway, plus 64 file reads); it
        ignores paths and modification times, so a copy of a folder has the same fingerprint and two folders
        that merely share a basename do not. An edit that keeps a file's size and misses the sample escapes it
        (the feature cache also keys on modification times)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for name, size, stamp in self.listing():
                h.update(f"{name}\t{size}\t{stamp if self.is_zip else ''}\n".encode())
            h.update(json.dumps(self.meta, sort_keys=True).encode())
            picks = np.unique(np.linspace(0, len(self.names) - 1, FINGERPRINT_SAMPLE_FILES).astype(np.int64))
            for i in picks:
                h.update(hashlib.sha256(self.read(self.names[int(i)])).digest())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def read(self, name: str) -> bytes:
        if not self.is_zip:
            return (self.root / name).read_bytes()
        if self._zip is None or self._zip_pid != os.getpid():  # DataLoader workers open their own handle
            self._zip, self._zip_pid = zipfile.ZipFile(self.root), os.getpid()
        return self._zip.read(name)


class ImageFolderDataset(ImageDataset):
    """ImageNet layout (one sub-folder per class -> integer label) or a zip of PNGs with an optional
    edm2-style `dataset.json` ({"labels": [[name, label], ...]}); ADM centre crop to `resolution`
    (resolution=None keeps the native size, as torch-fidelity reads folders: every image must have the size of the
    first readable one, else loading stops with an error asking for --resolution N)."""

    def __init__(self, root: str, split: str = "eval", resolution: int | None = None, skip_bad: bool = False,
                 **_: Any):
        path = Path(root).expanduser()
        if not path.exists():
            raise ValueError(f"data path {root!r} does not exist; expected an image folder or a .zip of images")
        for sub in ((split, "val", "validation") if split == "eval" else (split,)):
            if path.is_dir() and (path / sub).is_dir():
                path = path / sub
                break
        self.source = _Source(path)
        broken = self.source.broken_links
        if broken:
            warnings.warn(f"{path}: skipped {len(broken)} broken symlink(s) whose target is missing "
                          f"({', '.join(broken[:5])}{' ...' if len(broken) > 5 else ''}); recorded as "
                          "skipped_broken_links in provenance", stacklevel=2)
        if not self.source.names:
            raise ValueError(f"{path}: no images found (extensions {', '.join(IMAGE_EXTENSIONS)})"
                             + (f"; {len(broken)} broken symlink(s) skipped" if broken else ""))
        self.name = f"folder:{Path(root).name}"
        self.split = split
        self.resolution = resolution or 0
        self.size_from = ""  # the image that fixed the native size
        self.native_size = None if resolution else self._probe_size()  # (height, width) every image must have
        if self.native_size and self.native_size[0] == self.native_size[1]:
            self.resolution = self.native_size[0]
        self.skip_bad = skip_bad
        self.skipped: list[tuple[str, str]] = []
        self.labels = self._labels()
        self.num_classes = int(self.labels.max()) + 1 if len(self.labels) else 0

    def _labels(self) -> np.ndarray:
        meta = self.source.meta
        if meta and meta.get("labels"):
            table = dict((str(k), int(v)) for k, v in meta["labels"])
            return np.array([table.get(n, 0) for n in self.source.names], dtype=np.int64)
        classes = sorted({n.split("/")[0] for n in self.source.names if "/" in n})
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index.get(n.split("/")[0], 0) if "/" in n else 0 for n in self.source.names],
                        dtype=np.int64)

    def _probe_size(self) -> tuple[int, int] | None:
        """(height, width) from the header of the first readable image (no decoding), or None if none opens."""
        for name in self.source.names:
            try:
                with Image.open(io.BytesIO(self.source.read(name))) as img:
                    self.size_from = name
                    return img.size[1], img.size[0]
            except Exception:  # a bad file: load() reports it (or skips it with skip_bad)
                continue
        return None

    def __len__(self) -> int:
        return len(self.source.names)

    def load(self, i: int) -> np.ndarray:
        """Decode and centre-crop image i (uint8 HxWx3); at native size, an image of another size is an error."""
        name = self.source.names[i]
        img = decode_image(self.source.read(name), f"{self.source.root}/{name}")
        if self.resolution and self.native_size is None:
            return adm_center_crop(img, self.resolution)
        if self.native_size is not None and img.shape[:2] != self.native_size:
            (h, w), (h0, w0) = img.shape[:2], self.native_size
            raise ValueError(f"{self.source.root}/{name} is {w}x{h} px but {self.size_from} is {w0}x{h0}: "
                             f"the folder mixes image sizes; pass --resolution N to centre-crop all to N×N")
        return img

    def get_valid(self, indices) -> tuple[list[np.ndarray], torch.Tensor, np.ndarray]:
        """Decode `indices`; with skip_bad, bad files are counted in `self.skipped` and left out."""
        images, kept = [], []
        for i in np.asarray(indices, dtype=np.int64):
            try:
                images.append(self.load(int(i)))
                kept.append(int(i))
            except BadImageError as e:
                if not self.skip_bad:
                    raise
                self.skipped.append((self.source.names[int(i)], str(e)))
        kept_arr = np.array(kept, dtype=np.int64)
        return images, torch.as_tensor(self.labels[kept_arr]), kept_arr

    def get(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (uint8 NCHW, all `resolution`²) and labels; bad files raise unless skip_bad."""
        images, labels, _ = self.get_valid(indices)
        if not images:
            h, w = self.native_size or (self.resolution, self.resolution)
            return torch.zeros((0, 3, h, w), dtype=torch.uint8), labels
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), labels

    def info(self) -> dict[str, Any]:
        """Provenance: source path, crop, and the files skipped as bad."""
        return {**super().info(), "source": str(self.source.root), "dataset_fingerprint": self.source.fingerprint(),
                "preprocess": ("none (native size {1}x{0})".format(*self.native_size) if self.native_size
                               else f"ADM centre crop to {self.resolution}"),
                "skipped_bad_files": len(self.skipped),
                **({"skipped_broken_links": len(self.source.broken_links)} if self.source.broken_links else {})}
