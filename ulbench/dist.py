"""torchrun helpers: init (nccl on GPU, gloo on CPU), rank-0-first, all_reduce of additive float64 metric state."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import numpy as np
import torch
import torch.distributed as tdist


def world() -> tuple[int, int]:
    """(rank, world_size) from an initialised process group, else from torchrun's env, else (0, 1)."""
    if tdist.is_available() and tdist.is_initialized():
        return tdist.get_rank(), tdist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init_from_env() -> tuple[int, int]:
    """Initialise the default process group when launched by torchrun (nccl with CUDA, gloo otherwise)."""
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not tdist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        tdist.init_process_group(backend=backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return world()


def barrier() -> None:
    """Barrier when distributed, no-op otherwise."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.barrier()


@contextlib.contextmanager
def rank_zero_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. creating the run directory), the others after a barrier."""
    rank, _ = world()
    if rank != 0:
        barrier()
    yield
    if rank == 0:
        barrier()


def all_reduce_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sum float64 arrays over ranks (keys must match on every rank)."""
    if not (tdist.is_available() and tdist.is_initialized()):
        return arrays
    out = {}
    for key in sorted(arrays):
        t = torch.from_numpy(np.ascontiguousarray(arrays[key], dtype=np.float64))
        if torch.cuda.is_available() and tdist.get_backend() == "nccl":
            t = t.cuda()
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        out[key] = t.cpu().numpy()
    return out


def all_reduce_metrics(metrics: list, num_images: int) -> int:
    """Sum every metric's additive state over ranks in place; returns the total image count."""
    for m in metrics:
        keys = all_reduce_keys(m.state)
        m.state = all_reduce_arrays({k: m.state.get(k, np.zeros(1)) for k in keys})
    return int(all_reduce_arrays({"n": np.array([float(num_images)])})["n"][0])


def all_reduce_keys(state: dict[str, np.ndarray]) -> list[str]:
    """Union of state keys over ranks (states with lazily created keys, such as bit variants)."""
    if not (tdist.is_available() and tdist.is_initialized()):
        return sorted(state)
    gathered: list = [None] * tdist.get_world_size()
    tdist.all_gather_object(gathered, sorted(state))
    return sorted(set().union(*gathered))
