"""evaluate(system, metrics, data): per-index seeds, batching, exact sharding, additive merging (edm2 metrics).

Batches are read in the main process or by `num_workers` DataLoader workers (same batches, same order); systems and
detectors compute on their own device and hand back CPU uint8 images and float64 features, so metric state stays
float64 on the CPU."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import torch

from ulbench.data.base import ImageDataset
from ulbench.protocols import Batch, MetricValue


def per_index_seeds(indices: np.ndarray, seed: int) -> torch.Tensor:
    """One int64 seed per dataset index: outputs depend on (seed, index), never on batch or shard."""
    return torch.as_tensor(np.asarray(indices, dtype=np.int64) + (int(seed) << 32))


def shard_indices(num_items: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """Exact contiguous split of range(num_items) over ranks: no padding, no duplicates (PEERS pitfall 8)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    return np.array_split(np.arange(num_items, dtype=np.int64), world_size)[rank]


class _Chunks(torch.utils.data.Dataset):
    """Evaluation batch k of `indices` as (x uint8 NCHW or None, labels, kept indices, skipped files, asked)."""

    def __init__(self, dataset: ImageDataset, indices: np.ndarray, batch_size: int):
        self.dataset = dataset
        self.chunks = [indices[s:s + batch_size] for s in range(0, len(indices), batch_size)]

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, k: int):
        chunk, ds = self.chunks[k], self.dataset
        if not hasattr(ds, "get_valid"):
            x, labels = ds.get(chunk)
            return x, labels, chunk, [], len(chunk)
        n_skip = len(ds.skipped)
        images, labels, kept = ds.get_valid(chunk)
        skipped = ds.skipped[n_skip:]
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous() if images else None
        return x, labels, kept, skipped, len(chunk)


def _as_is(item: Any) -> Any:
    return item


def iter_batches(dataset: ImageDataset, indices: np.ndarray, batch_size: int, num_workers: int = 0):
    """Yield `_Chunks` items in order, read here (num_workers=0) or by DataLoader worker processes."""
    chunks = _Chunks(dataset, indices, batch_size)
    if num_workers <= 0 or len(chunks) <= 1:
        yield from (chunks[k] for k in range(len(chunks)))
        return
    loader = torch.utils.data.DataLoader(chunks, batch_size=None, shuffle=False, num_workers=num_workers,
                                         collate_fn=_as_is)
    for item in loader:
        if hasattr(dataset, "get_valid"):  # workers filled their own copy of the skipped list
            dataset.skipped.extend(item[3])
        yield item


@dataclass
class EvalOutput:
    """Merged metric values and run facts."""

    values: dict[str, tuple[Any, MetricValue]]  # row name -> (metric object, value)
    num_images: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    wall_time_s: float = 0.0


def run_batches(dataset: ImageDataset, indices: np.ndarray, metrics: list, batch_size: int, seed: int,
                produce: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Any] | None,
                progress: bool = False, caches: list | None = None, num_workers: int = 0
                ) -> tuple[int, list[tuple[str, str]]]:
    """Feed `metrics` batch by batch. `produce(x, labels, seeds)` returns a Reconstruction or uint8 samples;
    `caches` (RealFeatureCache) supply and keep features of the real images; `num_workers` reading processes."""
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    count, skipped = 0, []
    bar = tqdm(total=len(indices), desc="eval", unit="img", disable=not progress, leave=False)
    for x, labels, chunk, bad, asked in iter_batches(dataset, indices, batch_size, num_workers):
        skipped += bad
        if x is None:
            bar.update(asked)
            continue
        batch = Batch(indices=chunk, x_real=x)
        if produce is not None:
            out = produce(x, labels, per_index_seeds(chunk, seed))
            if torch.is_tensor(out):
                batch.x_fake = out
            else:
                batch.x_fake, batch.bits, batch.bits_stderr = out.x_hat, out.bits, out.bits_stderr
            if torch.is_tensor(batch.x_fake) and batch.x_fake.device.type != "cpu":
                batch.x_fake = batch.x_fake.cpu()  # metric inputs live on the CPU
            if batch.x_fake.dtype != torch.uint8 or batch.x_fake.shape != x.shape:
                raise ValueError(f"the system returned {batch.x_fake.dtype} {tuple(batch.x_fake.shape)}; expected "
                                 f"uint8 {tuple(x.shape)} (uint8 NCHW at every interface)")
        for cache in caches or ():
            cached = cache.lookup(chunk)
            if cached is not None:
                batch.cache[Batch.feature_key(cache.detector, "real")] = cached
        for m in metrics:
            m.update(batch)
        for cache in caches or ():
            key = Batch.feature_key(cache.detector, "real")
            if key in batch.cache and cache.lookup(chunk) is None:
                cache.store(chunk, batch.cache[key])
        count += len(chunk)
        bar.update(asked)
    bar.close()
    for cache in caches or ():
        cache.save()
    return count, skipped


def compute_all(metrics: Iterable) -> dict[str, tuple[Any, MetricValue]]:
    """Compute every metric; row name -> (metric, value)."""
    out = {}
    for m in metrics:
        for row_name, value in m.compute().items():
            out[row_name] = (m, value)
    return out


def evaluate_space(space: Any, dataset: ImageDataset, metrics: list, batch_size: int = 64, seed: int = 0,
                   rank: int = 0, world_size: int = 1, progress: bool = False, cache_features: bool = False,
                   num_workers: int = 0) -> EvalOutput:
    """Reconstruct this rank's exact shard of `dataset` through `space` and accumulate `metrics` (unmerged
    across ranks: call `ulbench.dist.all_reduce_metrics` before computing when world_size > 1); the space and
    detectors compute on their own devices."""
    t0 = time.perf_counter()
    indices = shard_indices(len(dataset), rank, world_size)
    caches = []
    if cache_features and world_size == 1:  # ranks hold disjoint shards: one writer per file
        from ulbench.feature_cache import RealFeatureCache

        detectors = {id(m.detector): m.detector for m in metrics if hasattr(m, "detector")}
        caches = [RealFeatureCache(dataset, d, cache_dir=None) for d in detectors.values()]
    with torch.inference_mode():
        count, skipped = run_batches(dataset, indices, metrics, batch_size, seed,
                                     lambda x, y, s: space.reconstruct(x, s), progress, caches, num_workers)
    return EvalOutput({}, count, skipped, time.perf_counter() - t0)
