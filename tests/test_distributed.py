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


TRAIN = ["train", "ul", "--set", "steps=4", "--set", "batch_size=8", "--set", "eval_every=4",
         "--set", "checkpoint_every=2", "--set", "eval_images=8", "--set", "eval_draws=2", "--set", "decode_steps=2",
         "--set", "num_threads=1"]


def _weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "checkpoint.safetensors"))


def test_training_world_size_two_matches_one(tmp_path):
    """Same global batch: each rank takes its half of the same draws; gradients are averaged."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "ulbench", *TRAIN, "--out", str(tmp_path / "w1")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          f"--master_port={_free_port()}", "-m", "ulbench", *TRAIN, "--out", str(tmp_path / "w2")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    log1 = [json.loads(x) for x in (tmp_path / "w1" / "log.jsonl").read_text().splitlines()]
    log2 = [json.loads(x) for x in (tmp_path / "w2" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log1] == [r["step"] for r in log2] == [1, 2, 3, 4]
    for a, b in zip(log1, log2):
        for key in ("total", "prior", "dec"):
            assert b[key] == pytest.approx(a[key], rel=1e-4), (a["step"], key)
    w1, w2 = _weights(tmp_path / "w1"), _weights(tmp_path / "w2")
    for k in w1:
        if k.startswith("model."):
            assert (w1[k] - w2[k]).abs().max() <= 1e-4 + 1e-3 * w1[k].abs().max(), k


@pytest.mark.slow
def test_sigkilled_two_process_training_resumes_exactly(tmp_path):
    """A 2-process run SIGKILLed after its first checkpoint and resumed ends with the uninterrupted weights."""
    import signal
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [*TRAIN[:2], "--set", "steps=6", *TRAIN[4:]]

    def launch(out, *extra):
        return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                                 f"--master_port={_free_port()}", "-m", "ulbench", *args, "--out", str(out), *extra],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    full = launch(tmp_path / "full")
    assert full.wait(timeout=900) == 0
    victim = launch(tmp_path / "cut")
    state = tmp_path / "cut" / "checkpoint.json"
    deadline = time.time() + 900
    while time.time() < deadline and not (state.exists() and json.loads(state.read_text())["step"] >= 2):
        time.sleep(0.2)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    step_at_kill = json.loads(state.read_text())["step"]
    assert step_at_kill < 6
    resumed = launch(tmp_path / "cut", "--resume")
    assert resumed.wait(timeout=900) == 0
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert a.keys() == b.keys()
    for k in a:
        assert torch_equal(a[k], b[k]), k


def torch_equal(x, y) -> bool:
    import torch

    return torch.equal(x, y)


def test_base_training_world_size_two_matches_one(tmp_path):
    """Stage 2 under torchrun: same global batch, same loss curve and weights as one process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["train", "base", "--space", "pixel", "--set", "steps=3", "--set", "batch_size=8",
            "--set", "channels=[8, 16]", "--set", "num_threads=1"]
    one = subprocess.run([sys.executable, "-m", "ulbench", *args, "--out", str(tmp_path / "b1")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          f"--master_port={_free_port()}", "-m", "ulbench", *args, "--out", str(tmp_path / "b2")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    l1 = [json.loads(x) for x in (tmp_path / "b1" / "base_log.jsonl").read_text().splitlines()]
    l2 = [json.loads(x) for x in (tmp_path / "b2" / "base_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in l1] == [r["step"] for r in l2] == [1, 2, 3]
    for a, b in zip(l1, l2):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)  # nats per dimension
    from safetensors.torch import load_file

    w1, w2 = load_file(str(tmp_path / "b1" / "base.safetensors")), load_file(str(tmp_path / "b2" / "base.safetensors"))
    for k in w1:
        if k.startswith("net."):
            assert (w1[k] - w2[k]).abs().max() <= 1e-5 + 1e-4 * w1[k].abs().max(), k
