"""SIGKILL + resume is exact for every trainer's objective on the one loop (issue 11)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.loop_objectives import NAMES

REPO = Path(__file__).resolve().parents[1]
CHILD = textwrap.dedent("""
    import os, signal, sys
    import torch
    from tests.loop_objectives import toy
    from ul_models.training.loop import Loop
    root, kill_at, names = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
    torch.set_num_threads(1)
    if kill_at >= 0:
        original = Loop.step
        def killing_step(self, step, batch, guard=True):
            if step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, step, batch, guard)
        Loop.step = killing_step
    for name in names:
        objective, cfg, data = toy(name, steps=6, checkpoint_every=2)
        loop = Loop(objective, cfg, checkpoint=f"{root}/{name}/ckpt.safetensors", log=f"{root}/{name}/log.jsonl")
        loop.run(data, resume=True, progress=False)
""")


def _child(tmp_path: Path, root: Path, names: list[str], kill_at: int = -1) -> int:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), str(root), str(kill_at), ",".join(names)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(proc.stderr[-3000:])
    return proc.returncode


def _log(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(x).items() if k != "img_per_s"} for x in path.read_text().splitlines()]


@pytest.mark.parametrize("name", [n for n in NAMES if n != "ul"])  # UL stage 1: tests/test_ul_resume.py
def test_every_trainer_resumes_bit_identical_after_sigkill(tmp_path, name):
    """One trainer per process in every phase (kernels may round differently after other work in a process)."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert _child(tmp_path, straight, [name]) == 0
    assert _child(tmp_path, killed, [name], kill_at=3) == -signal.SIGKILL  # dies in step 4: checkpoint at 2
    assert json.loads((killed / name / "ckpt.state.json").read_text())["step"] == 2
    assert _child(tmp_path, killed, [name]) == 0
    a, b = load_file(str(straight / name / "ckpt.safetensors")), load_file(str(killed / name / "ckpt.safetensors"))
    assert a.keys() == b.keys() and any(k.startswith("optim.") for k in a), name
    for key in a:
        assert torch.equal(a[key], b[key]), (name, key)
    assert _log(straight / name / "log.jsonl") == _log(killed / name / "log.jsonl"), name
