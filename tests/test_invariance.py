"""Results do not depend on batch size or on the number of shards merged (torch-fidelity, torchmetrics)."""

from __future__ import annotations

import numpy as np
import pytest

from ulbench.data.base import Subset
from ulbench.data.embedded import embedded_photos
from ulbench.evaluation import build_metrics
from ulbench.harness import compute_all, evaluate_space
from ulbench.metrics.features import ProxyDetector
from ulbench.registry import SPACES

METRICS = ["rfid", "kid", "psnr", "ssim", "bpp"]


def _run(batch_size: int, world_size: int) -> dict[str, float]:
    ds = Subset(embedded_photos("eval"), 300)
    det = ProxyDetector()
    space = SPACES.build("jpeg-q30")
    merged = None
    for rank in range(world_size):
        metrics = build_metrics(METRICS, len(ds), det)
        evaluate_space(space, ds, metrics, batch_size=batch_size, rank=rank, world_size=world_size)
        if merged is None:
            merged = metrics
        else:
            for a, b in zip(merged, metrics):
                a.merge(b)
    return {k: v.value for k, (_, v) in compute_all(merged).items()}


@pytest.fixture(scope="module")
def reference():
    return _run(batch_size=64, world_size=1)


@pytest.mark.parametrize("batch_size,world_size", [(7, 1), (300, 1), (64, 3), (13, 2)])
def test_same_values_any_batching_or_sharding(reference, batch_size, world_size):
    got = _run(batch_size, world_size)
    assert set(got) == set(reference) == {"rfid", "kid", "psnr", "ssim", "bpp", "bpp_entropy"}
    for k in reference:
        assert got[k] == pytest.approx(reference[k], rel=1e-6, abs=1e-9), k


def test_fd_effnet_same_values_any_batching_or_sharding():
    """FD-EffNet (the embedded default's detector, fixed micro-batches): same rFD-EffNet and KD-EffNet for any
    batch size or shard count (60 images: 120 EffNet forwards per run)."""
    from ulbench.metrics.effnet import EffNetDetector

    ds, det, space = Subset(embedded_photos("eval"), 60), EffNetDetector(), SPACES.build("jpeg-q30")
    got = []
    for batch_size, world_size in ((60, 1), (7, 1), (16, 3)):
        merged = None
        for rank in range(world_size):
            metrics = build_metrics(["rfid", "kid"], len(ds), det)
            evaluate_space(space, ds, metrics, batch_size=batch_size, rank=rank, world_size=world_size)
            merged = metrics if merged is None else [a.merge(b) or a for a, b in zip(merged, metrics)]
        got.append({k: v.value for k, (_, v) in compute_all(merged).items()})
    assert merged[0].label == "rFD-EffNet" and got[0]["rfid"] > 0
    for other in got[1:]:
        for k in got[0]:
            assert other[k] == pytest.approx(got[0][k], rel=1e-9, abs=1e-12), k


def test_shards_are_exact_partitions():
    from ulbench.harness import shard_indices

    parts = [shard_indices(10, r, 3) for r in range(3)]
    assert np.array_equal(np.concatenate(parts), np.arange(10))


def test_real_feature_cache_gives_identical_rows(tmp_path, monkeypatch, eval_images):
    """Second eval reads cached real features (same numbers); editing a folder invalidates the cache."""
    from tests.conftest import write_pngs
    from ulbench.data.folder import ImageFolderDataset
    from ulbench.evaluation import eval_space
    from ulbench.feature_cache import RealFeatureCache

    monkeypatch.setenv("ULBENCH_CACHE", str(tmp_path / "cache"))
    folder = write_pngs(tmp_path / "imgs", eval_images[:20])
    det = ProxyDetector()

    def run():
        ds = ImageFolderDataset(str(folder), split="all", resolution=32)
        return {r.metric: r.value for r in eval_space("jpeg-q30", ds, ["rfid", "kid"], det, batch_size=8)}

    first = run()
    cache = RealFeatureCache(ImageFolderDataset(str(folder), split="all", resolution=32), det)
    assert cache.path.is_file() and cache.mask.all()
    assert run() == first
    write_pngs(folder, eval_images[100:101], prefix="img0000")  # overwrites img00000.png with another image
    assert not RealFeatureCache(ImageFolderDataset(str(folder), split="all", resolution=32), det).mask.any()
