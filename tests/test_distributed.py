"""torchrun with 2 gloo processes on CPU gives the same metrics as 1 process (exact sharding, all_reduce)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

ARGS = ["eval", "--space", "jpeg-q30", "--metrics", "rfid,kid,psnr,ssim,bpp", "--detector", "proxy",
        "--limit", "101", "--no-cache", "--batch-size", "16"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rows(path) -> dict[str, dict]:
    return {r["metric"]: r for r in map(json.loads, path.read_text().splitlines())}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "ulbench", *ARGS, "--out", str(root / "w1")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          f"--master_port={_free_port()}", "-m", "ulbench", *ARGS, "--out", str(root / "w2")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    return _rows(root / "w1" / "results.jsonl"), _rows(root / "w2" / "results.jsonl"), root


def test_world_size_two_equals_one(runs):
    one, two, _ = runs
    assert set(one) == set(two) == {"rfid", "kid", "psnr", "ssim", "bpp", "bpp_entropy"}
    for metric in one:
        assert two[metric]["n"] == one[metric]["n"] == 101  # exact counts: no padding, no duplicates
        assert two[metric]["value"] == pytest.approx(one[metric]["value"], rel=1e-6, abs=1e-12), metric
        assert two[metric]["provenance"]["world_size"] == 2 and one[metric]["provenance"]["world_size"] == 1


def test_only_rank_zero_writes(runs):
    _, _, root = runs
    assert len((root / "w2" / "results.jsonl").read_text().splitlines()) == 6
