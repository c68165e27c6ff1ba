"""Exact resume: a SIGKILLed-then-resumed stage-1 run ends bit-identical to an uninterrupted one."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from ul_models.config import ULConfig

REPO = Path(__file__).resolve().parents[1]
from tests.conftest import TINY_UL as TINY  # noqa: E402
from tests.conftest import checkpoint_tensors  # noqa: E402

CHILD = textwrap.dedent("""
    import json, os, signal, sys
    import ul_models.train as T
    from ul_models.config import ULConfig
    from ul_models.training.loop import Loop
    run_dir, cfg_json, kill_at, resume = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
    if kill_at >= 0:
        original = Loop.step
        def killing_step(self, step, batch, guard=True):
            if step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, step, batch, guard)
        Loop.step = killing_step
    T.train_stage1(ULConfig.from_dict(json.loads(cfg_json)), run_dir, resume=resume, progress=False)
""")


def _child(tmp_path: Path, run_dir: Path, cfg: ULConfig, kill_at: int = -1, resume: bool = False) -> int:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            str(run_dir),
            json.dumps(cfg.to_dict()),
            str(kill_at),
            "1" if resume else "0",
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(proc.stderr)
    return proc.returncode


_tensors = checkpoint_tensors


def test_sigkilled_then_resumed_run_matches_uninterrupted(tmp_path):
    cfg = ULConfig.preset("tiny", **TINY)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert _child(tmp_path, straight, cfg) == 0
    assert _child(tmp_path, killed, cfg, kill_at=4) == -signal.SIGKILL  # dies in step 5, checkpoint at 3
    assert json.loads((killed / "checkpoint.json").read_text())["step"] == 3
    assert _child(tmp_path, killed, cfg, resume=True) == 0
    a, b = _tensors(straight), _tensors(killed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    def records(d):  # the log less its wall-clock throughput
        return [{k: v for k, v in json.loads(x).items() if k != "img_per_s"}
                for x in (d / "log.jsonl").read_text().splitlines()]

    assert records(straight) == records(killed) and len(records(killed)) == cfg.steps
