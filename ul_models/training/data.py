"""Training batches: seeded epoch permutations, each rank's share of the global batch, and a DataLoader [ours].

Step s reads global-batch positions [s·B, (s+1)·B) of a stream of epoch permutations seeded by (seed, epoch),
so the order is a function of (seed, step) alone and a resumed run reads exactly what the uninterrupted one
would. Rank r of W takes positions [r·B/W, (r+1)·B/W) of every step. In-memory data (tensors) is indexed
directly; datasets (image folders, zips, latent caches, video) go through `torch.utils.data.DataLoader` with
workers, pinned memory and persistent workers, fed by `StepSampler`, which resumes at any step.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ul_models.seeds import seed_for

Batch = dict[str, torch.Tensor]


def batch_indices(step: int, batch_size: int, num_items: int, seed: int) -> np.ndarray:
    """Dataset indices of one step: a fresh permutation per epoch seeded by (seed, epoch), read in order."""
    pos = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.int64)
    out = np.empty_like(pos)
    for epoch in np.unique(pos // num_items):
        perm = np.random.default_rng(seed_for(seed, "data_order", int(epoch))).permutation(num_items)
        sel = pos // num_items == epoch
        out[sel] = perm[pos[sel] % num_items]
    return out


def rank_positions(batch_size: int, rank: int, world_size: int) -> np.ndarray:
    """Global-batch positions of this rank's equal share."""
    if batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} must divide by the world size {world_size}; pick a multiple")
    share = batch_size // world_size
    return np.arange(rank * share, (rank + 1) * share, dtype=np.int64)


class StepSampler(Sampler):
    """Yields this rank's dataset indices for steps start..steps-1 (a seeded, resumable batch sampler)."""

    def __init__(self, num_items: int, batch_size: int, seed: int, start: int, steps: int, positions: np.ndarray):
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start, self.steps, self.positions = start, steps, positions

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.steps):
            yield batch_indices(step, self.batch_size, self.num_items, self.seed)[self.positions].tolist()

    def __len__(self) -> int:
        return max(0, self.steps - self.start)


class ImageBatches(Dataset):
    """A map-style view of an `ImageDataset` (folder, zip, embedded) giving {"x": uint8, "label": int64} batches."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Batch:
        return self.__getitems__([i])

    def __getitems__(self, indices: list[int]) -> Batch:
        """One batched read (the DataLoader calls this with a whole batch of indices)."""
        x, labels = self.dataset.get(np.asarray(indices, dtype=np.int64))
        return {"x": x, "label": labels}


class TensorBatches(Dataset):
    """In-memory training data: a dict of tensors with a common first dimension (latents, labels, clips)."""

    def __init__(self, **tensors: torch.Tensor):
        lengths = {len(v) for v in tensors.values()}
        if len(lengths) != 1:
            raise ValueError(f"TensorBatches: tensors of different lengths {sorted(lengths)}")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, i: int) -> Batch:
        return self.__getitems__([i])

    def __getitems__(self, indices: list[int]) -> Batch:
        """Rows at `indices` of every tensor."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return {k: v[idx] for k, v in self.tensors.items()}


def _first(batch: Batch) -> Batch:
    return batch


def step_batches(data: Dataset, batch_size: int, seed: int, start: int, steps: int, positions: np.ndarray,
                 num_workers: int = 0, pin_memory: bool = False) -> Iterator[Batch]:
    """This rank's batch of each step from `start`; in-process for num_workers=0, else a DataLoader."""
    sampler = StepSampler(len(data), batch_size, seed, start, steps, positions)
    if num_workers == 0:
        for indices in sampler:
            batch = data.__getitems__(indices)
            yield {k: v.pin_memory() for k, v in batch.items()} if pin_memory else batch
        return
    loader = DataLoader(data, batch_sampler=sampler, num_workers=num_workers, pin_memory=pin_memory,
                        persistent_workers=True, collate_fn=_first, prefetch_factor=2)
    yield from loader
