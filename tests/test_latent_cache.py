"""Sharded latent cache: two ranks' shards make the same latents as one process; resume; checksums."""

from __future__ import annotations

import pytest
import torch

from ulbench.data.base import Subset
from ulbench.data.embedded import embedded_photos
from ulbench.latent_cache import cache_latents, load_latents
from ulbench.registry import SPACES


def test_sharded_cache_equals_direct_encode(tmp_path):
    ds = Subset(embedded_photos("train"), 50)
    space = SPACES.build("pixel")
    m = cache_latents(space, ds, tmp_path / "a", shard_size=16, batch_size=7)
    assert m["complete"] and m["num_shards"] == 4
    z, y = load_latents(tmp_path / "a")
    x, labels = ds.get(range(50))
    assert torch.equal(z, space.encode(x, None)) and torch.equal(y, labels)
    # "two ranks" writing alternate shards, rank 1 first, then rank 0 gathers the manifest
    cache_latents(space, ds, tmp_path / "b", shard_size=16, rank=1, world_size=2)
    assert not (tmp_path / "b" / "manifest.json").exists()
    cache_latents(space, ds, tmp_path / "b", shard_size=16, rank=0, world_size=2)
    assert torch.equal(load_latents(tmp_path / "b")[0], z)
    before = (tmp_path / "b" / "shard-00001.safetensors").stat().st_mtime_ns
    cache_latents(space, ds, tmp_path / "b", shard_size=16)  # resume: nothing to redo
    assert (tmp_path / "b" / "shard-00001.safetensors").stat().st_mtime_ns == before
    p = tmp_path / "b" / "shard-00002.safetensors"
    p.write_bytes(p.read_bytes()[:-8] + b"corrupt!")
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_latents(tmp_path / "b")
