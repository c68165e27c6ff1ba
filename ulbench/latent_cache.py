"""Latent caching for frozen encoders (SD-VAE, stage-2 UL): sharded safetensors with a manifest (issue 7).

Shard k holds dataset indices [k·S, (k+1)·S); rank r writes the shards k ≡ r (mod world size), each atomically
with a JSON sidecar, so an interrupted job resumes by skipping finished shards; rank 0 writes the manifest.
The encoder runs on the execution's device and precision (latents come back to the CPU as float32).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ulbench.device import Execution
from ulbench.features_hash import sha256_bytes
from ulbench.harness import iter_batches, per_index_seeds
from ulbench.results import atomic_write_text, config_hash
from ulbench.spaces import space_info

MANIFEST = "manifest.json"


def cache_latents(space: Any, dataset: Any, out_dir: str | os.PathLike, shard_size: int = 1024,
                  batch_size: int = 64, seed: int = 0, rank: int = 0, world_size: int = 1,
                  execution: Execution | None = None) -> dict[str, Any]:
    """Encode `dataset` with `space.encode` (per-index seeds) into shards under `out_dir`; returns the manifest.
    With `execution`, the space is moved to its device and precision and data are read by its workers."""
    from ulbench.evaluation import place

    place(space, execution)
    num_workers = execution.num_workers if execution is not None else 0
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = len(dataset)
    num_shards = (n + shard_size - 1) // shard_size
    key = config_hash({"space": space_info(space).to_dict(),  # SpaceInfo: provenance decides reuse
                       "data": dataset.info(), "seed": seed, "shard_size": shard_size})
    for k in range(rank, num_shards, world_size):
        side = out / f"shard-{k:05d}.json"
        if side.exists() and json.loads(side.read_text()).get("key") == key:
            continue  # finished earlier (resume)
        idx = np.arange(k * shard_size, min(n, (k + 1) * shard_size), dtype=np.int64)
        parts, labels = [], []
        for x, y, chunk, bad, _ in iter_batches(dataset, idx, batch_size, num_workers):
            if x is None or len(chunk) != len(x) or bad:
                raise ValueError(f"latent cache: unreadable images in shard {k} ({bad[:3]}); fix or remove them")
            with torch.inference_mode():
                parts.append(space.encode(x, per_index_seeds(chunk, seed)).float().cpu())
            labels.append(y)
        tensors = {"latents": torch.cat(parts).contiguous(), "labels": torch.cat(labels),
                   "indices": torch.from_numpy(idx)}
        path = out / f"shard-{k:05d}.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file(tensors, str(tmp))
        os.replace(tmp, path)
        atomic_write_text(side, json.dumps({"key": key, "count": len(idx), "sha256": sha256_bytes(path.read_bytes())}))
    if rank == 0:
        from ulbench import dist

        dist.barrier()
        sides = [json.loads((out / f"shard-{k:05d}.json").read_text()) for k in range(num_shards)
                 if (out / f"shard-{k:05d}.json").exists()]
        manifest = {"key": key, "num_images": n, "shard_size": shard_size, "num_shards": num_shards,
                    "complete": len(sides) == num_shards and all(s["key"] == key for s in sides),
                    "shards": [{"file": f"shard-{k:05d}.safetensors", **s} for k, s in enumerate(sides)],
                    "space": space_info(space).to_dict(), "dataset": dataset.info(), "seed": seed}
        atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1, default=str))
        return manifest
    from ulbench import dist

    dist.barrier()
    return {}


def load_latents(out_dir: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """All cached latents and labels in index order, after checking the manifest and shard hashes."""
    out = Path(out_dir)
    if not (out / MANIFEST).exists():
        raise ValueError(f"{out}: no {MANIFEST}; run the caching job first")
    manifest = json.loads((out / MANIFEST).read_text())
    if not manifest["complete"]:
        raise ValueError(f"{out}: latent cache incomplete ({len(manifest['shards'])}/{manifest['num_shards']} "
                         "shards); re-run the caching job to resume it")
    latents, labels = [], []
    for shard in manifest["shards"]:
        path = out / shard["file"]
        if sha256_bytes(path.read_bytes()) != shard["sha256"]:
            raise ValueError(f"{path}: checksum mismatch with {MANIFEST}; delete the shard and re-run to rebuild")
        t = load_file(str(path))
        latents.append(t["latents"])
        labels.append(t["labels"])
    return torch.cat(latents), torch.cat(labels)
