"""Diffusers autoencoder folders: find the model (a pipeline folder gives its vae/), check it, hash it, load it.

One clear error per bad folder, naming it and the supported classes. Weights load from local safetensors only
(never the network). A hub id is reported only when the folder is a snapshot in the Hugging Face cache
(models--ORG--NAME/snapshots/REV), i.e. when the weights did come from that hub repository.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch

from baselines.diffusers_classes import CLASSES, SUPPORTED

WEIGHTS = "diffusion_pytorch_model.safetensors"  # what from_pretrained loads (or the shards of WEIGHTS.index.json)
PIPELINE_SUBFOLDERS = ("vae", "vqvae")  # where a diffusers pipeline folder keeps its autoencoder
def _supported() -> str:
    return f"supported classes: {', '.join(SUPPORTED)}"


def resolve_model_dir(path: str | Path, what: str = "diffusers") -> Path:
    """The autoencoder folder for `path` (a pipeline folder gives its vae/ or vqvae/), checked: one clear error."""
    folder = Path(path).expanduser()
    where = f"{what}: {str(folder)!r}"
    if not folder.is_dir():
        raise FileNotFoundError(f"{where} is not a directory; expected a diffusers autoencoder folder (config.json "
                                f"and {WEIGHTS}, e.g. from save_pretrained) or a pipeline folder; {_supported()}.")
    if not (folder / "config.json").is_file():
        sub = next((folder / s for s in PIPELINE_SUBFOLDERS if (folder / s / "config.json").is_file()), None)
        if sub is None:
            found = sorted(p.name for p in folder.iterdir())[:10]
            raise FileNotFoundError(f"{where} has no config.json (found {found}) and no pipeline vae/ or vqvae/ "
                                    f"subfolder; pass the autoencoder's folder; {_supported()}.")
        folder = sub
    config = json.loads((folder / "config.json").read_text())
    name = config.get("_class_name")
    if name not in CLASSES:
        raise ValueError(f"{what}: {str(folder)!r} holds a {name or 'config without _class_name'}, not an "
                         f"autoencoder this adapter runs; {_supported()}.")
    weights_files(folder, what)
    return folder


def weights_files(folder: Path, what: str = "diffusers") -> list[Path]:
    """The safetensors files `from_pretrained` loads: WEIGHTS or the shards its index lists."""
    index = folder / f"{WEIGHTS}.index.json"
    if (folder / WEIGHTS).is_file():
        return [folder / WEIGHTS]
    if index.is_file():
        return [folder / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    found = sorted(p.name for p in folder.iterdir())[:10]
    raise FileNotFoundError(f"{what}: {str(folder)!r} has no {WEIGHTS} (found {found}; pickled .bin/.ckpt and "
                            f"variant files are not loaded); save the model with save_pretrained; {_supported()}.")


def sha256_file(path: Path, chunk_bytes: int = 1 << 22) -> str:
    """SHA-256 hex digest of a file (provenance of weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def weights_sha256(folder: Path) -> dict[str, str]:
    """SHA-256 of each weights file the model loads from `folder`."""
    return {p.name: sha256_file(p) for p in weights_files(Path(folder))}


def hub_snapshot_of(folder: Path) -> dict[str, str]:
    """{"hub_id", "hub_revision"[, "hub_subfolder"]} when `folder` lies in an HF cache snapshot; else {}."""
    parts = Path(folder).absolute().parts
    for i in range(len(parts) - 2):
        m = re.fullmatch(r"models--(.+)", parts[i])
        if m and parts[i + 1] == "snapshots":
            sub = "/".join(parts[i + 3:])
            return {"hub_id": m[1].replace("--", "/"), "hub_revision": parts[i + 2],
                    **({"hub_subfolder": sub} if sub else {})}
    return {}


def load_autoencoder(folder: Path, device: str | torch.device = "cpu") -> Any:
    """The diffusers class named in config.json, from safetensors in `folder` only, in eval mode."""
    import diffusers

    name = json.loads((Path(folder) / "config.json").read_text()).get("_class_name")
    if name not in CLASSES:
        raise ValueError(f"{str(folder)!r} holds a {name}; {_supported()}.")
    vae = getattr(diffusers, name).from_pretrained(str(folder), local_files_only=True, use_safetensors=True,
                                                   low_cpu_mem_usage=False)  # True needs `accelerate`
    return vae.to(device).eval().requires_grad_(False)
