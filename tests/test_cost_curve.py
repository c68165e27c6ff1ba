"""Cost-quality curves (issue 14 item 4): gFID at points along stage-2 training against cumulative FLOPs."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ulbench.cli import main

SUITE = """
include: [{common}]
eval: {{num_eval: 16, num_gen: 24, sample_steps: 2, decode_steps: 2, metrics: [psnr, gfid], curve_points: 2}}
defaults:
  base: {{steps: 4, checkpoint_every: 2, batch_size: 8, channels: [16, 32]}}
runs:
  - {{name: pixel, system: pixel}}
"""


def test_gfid_curve_points_resume_to_the_final_model(tmp_path):
    from ulbench.config import SUITES_DIR
    from ulbench.report.plots import cost_quality

    suite = tmp_path / "curve.yaml"
    suite.write_text(SUITE.format(common=SUITES_DIR / "_common.yaml"))
    res = CliRunner().invoke(main, ["run", "--suite", str(suite), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    curve = sorted((r for r in rows if r["metric"] == "gfid_curve"), key=lambda r: r["extra"]["base_steps"])
    final = next(r for r in rows if r["metric"] == "gfid")
    assert [r["extra"]["base_steps"] for r in curve] == [2, 4]
    assert curve[0]["extra"]["train_macs"] < curve[1]["extra"]["train_macs"]
    flops = next(r for r in rows if r["metric"] == "train_flops")
    assert curve[1]["extra"]["train_macs"] == pytest.approx(flops["value"])  # the last point is the run itself
    assert curve[1]["value"] == pytest.approx(final["value"], rel=1e-9)  # resumed from point 1: same weights
    assert curve[0]["value"] != curve[1]["value"]
    assert cost_quality(rows, proxy=True) is not None
