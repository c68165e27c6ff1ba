"""Suites (config, run, reuse), reports (Markdown, HTML in headless Chromium) and the CI regression gate."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ulbench.cli import main
from ulbench.config import load_suite

MINI = """
include: [{common}]
description: "test suite"
eval: {{num_eval: 48, num_gen: 48, sample_steps: 2, decode_steps: 2, detector: proxy}}  # fast; EffNet: test_effnet
defaults:
  base: {{steps: 3, checkpoint_every: 3, batch_size: 16, channels: [16, 32]}}
  bound: {{steps: 3, batch_size: 16, channels: [16], draws: 2}}
runs:
  - {{name: pixel, system: pixel, label: "pixel <b>diffusion</b>"}}
  - {{name: sd-vae-tiny, system: sd-vae-tiny, stage1: {{steps: 2, batch_size: 8, metric_images: 16}}}}
  - {{name: jpeg-q10, system: jpeg, space: jpeg-q10}}
  - {{name: jpeg-q50, system: jpeg, space: jpeg-q50}}
"""


@pytest.fixture(scope="module")
def mini_run(tmp_path_factory):
    from ulbench.config import SUITES_DIR

    root = tmp_path_factory.mktemp("suite")
    suite = root / "mini.yaml"
    suite.write_text(MINI.format(common=SUITES_DIR / "_common.yaml"))
    out = root / "out"
    res = CliRunner().invoke(main, ["run", "--suite", str(suite), "--out", str(out)])
    assert res.exit_code == 0, res.output
    return suite, out, res


def test_suites_resolve_with_include_sweep_and_set():
    s = load_suite("bitrate", ["defaults.stage1.steps=7"])
    names = [r.name for r in s.runs]
    assert "clf-c_lf30" in names and len([n for n in names if n.startswith("clf-c_lf") and "@" not in n]) == 4
    assert {"bias-bias_b-2", "bias-bias_b4@seed1"} <= set(names) and "bias-bias_b4@seed2" not in names  # seeds: 2
    assert "jpeg-q10" in names and not [n for n in names if n.startswith("jpeg") and "@seed" in n]  # untrained
    assert all(r.stage1.get("steps") == 7 for r in s.runs if r.system == "ul")
    shape = [r.name for r in load_suite("latent-shape").runs]
    assert "shape-latent_channels8-downsample_factor2" in shape and len(shape) == 6
    assert s.eval.detector == "effnet-lite0" and s.data == "embedded"
    assert load_suite("ablations").config_hash() != load_suite("ablations", ["eval.num_gen=10"]).config_hash()
    with pytest.raises(ValueError, match="Did you mean 'ablations'"):
        load_suite("ablation")
    with pytest.raises(ValueError, match="unknown eval keys"):
        load_suite("smoke", ["eval.nmu_gen=3"])


@pytest.mark.parametrize("assignment, message", [
    ("defaults.stage1.c_lff=3", "unknown stage1 key 'c_lff' (did you mean 'c_lf'"),
    ("defaults.base.stpes=3", "unknown base key 'stpes' (did you mean 'steps'"),
    ("defaults.bound.lr=fast", "bound.lr='fast': expected float"),
    ("defaults.stage1.steps=abc", "stage1.steps='abc': expected int"),
    ("defaults.stage1.c_lf=-1", "stage1: ULConfig"),
])
def test_typo_in_a_stage_key_is_one_error_line_before_anything_runs(assignment, message, tmp_path):
    """Typed stage configs: --dry-run already refuses what would crash mid-suite, naming the key and valid ones."""
    res = CliRunner().invoke(main, ["run", "--suite", "smoke", "--dry-run", "--out", str(tmp_path),
                                    "--set", assignment])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], res.output
    assert "valid" in lines[0] or "expected" in lines[0] or "ULConfig" in lines[0]
    assert not any(tmp_path.iterdir())


def test_dry_run_lists_runs():
    res = CliRunner().invoke(main, ["run", "--suite", "ablations", "--dry-run", "--out", "/nonexistent/x"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.output)
    assert [r["run"] for r in plan["runs"]] == ["baseline", "separate-prior", "noisy-latents", "learned-variance",
                                                 "other-data", "single-stage"]
    assert {r["action"] for r in plan["runs"]} == {"run"}


def test_suite_rows_table_and_reuse(mini_run):
    suite, out, res = mini_run
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    metrics = {(r["system"], r["metric"]): r for r in rows}
    assert metrics[("pixel", "gfid")]["status"] == "ok" and metrics[("pixel", "gfid")]["proxy"] is True
    assert metrics[("jpeg-q10", "gfid")]["status"] == "skipped"
    assert metrics[("pixel", "bpp")]["value"] == 24.0
    assert metrics[("pixel", "train_flops")]["value"] > 0 and metrics[("jpeg-q10", "train_flops")]["value"] == 0
    # deterministic spaces also get the UL bound of a fitted prior (UL-SPEC §3); JPEG has real bits instead
    for system in ("pixel", "sd-vae-tiny"):
        assert metrics[(system, "bpp_ul_bound")]["value"] > 0, system
        assert "ul_bound" in metrics[(system, "bpp")]["provenance"]["system_info"]["details"]
    assert metrics[("sd-vae-tiny", "gfid")]["status"] == "ok"
    assert metrics[("sd-vae-tiny", "train_flops")]["value"] > 0
    costs = metrics[("sd-vae-tiny", "train_flops")]["extra"]  # latents cached: the encoder runs once per image
    encoded = 2 * 1430  # the embedded train split and its horizontal flips
    encoder_macs = costs["forward_macs_per_sample"]["encoder"]
    assert costs["train_breakdown_macs"]["base/encode-train-set"] == encoder_macs * encoded
    assert ("jpeg-q10", "bpp_ul_bound") not in metrics
    # bits per latent dimension of the comparable rate, and the λ₀ channel's capacity (issue 14)
    per_dim = metrics[("pixel", "bits_per_latent_dim")]
    assert per_dim["value"] == pytest.approx(metrics[("pixel", "bpp_ul_bound")]["value"] / 3)  # 3 dims per pixel
    assert per_dim["extra"]["capacity_bits_per_dim_unit_var"] == pytest.approx(0.5 * np.log2(1 + np.exp(5.0)))
    from ulbench.report.plots import capacity_lines

    assert (5.0, 3072, pytest.approx(3 * 0.5 * np.log2(1 + np.exp(5.0)))) in capacity_lines(rows)
    assert "[proxy]" in res.output
    again = CliRunner().invoke(main, ["run", "--suite", str(suite), "--out", str(out), "--no-report"])
    assert again.exit_code == 0 and again.output.count("reusing finished run") == 4


def test_report_markdown_html_escaped(mini_run):
    _, out, _ = mini_run
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "PROXY" in md and "rate-distortion" in md and "## Provenance" in md
    assert "pixel &lt;b&gt;diffusion&lt;/b&gt;" in html and "<b>diffusion</b>" not in html
    assert html.count("data:image/png;base64,") >= 3  # rate-distortion, cost-quality, sample grids


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_renders_in_headless_chromium(mini_run, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it with apt-get)")
    _, out, _ = mini_run
    shot = tmp_path / "shot.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2400", f"--screenshot={shot}",
           f"file://{out / 'report.html'}"]
    subprocess.run(cmd, capture_output=True, timeout=120)
    dom = subprocess.run([*cmd[:-2], "--dump-dom", f"file://{out / 'report.html'}"], capture_output=True,
                         text=True, timeout=120).stdout
    assert "<table" in dom and dom.count("<img") >= 3 and "Provenance" in dom
    from PIL import Image

    img = Image.open(shot).convert("L")
    extrema = img.getextrema()
    assert extrema[1] - extrema[0] > 100, "screenshot is blank"
    hist = img.histogram()
    assert max(hist) / sum(hist) < 0.97, "page is (almost) one colour"


def test_check_passes_on_baseline_and_fails_on_worse(mini_run, tmp_path):
    _, out, _ = mini_run
    results = out / "results.jsonl"
    base = tmp_path / "baseline.json"
    r = CliRunner().invoke(main, ["check", str(results), "--baseline", str(base), "--update"])
    assert r.exit_code == 0 and base.exists()
    assert CliRunner().invoke(main, ["check", str(results), "--baseline", str(base)]).exit_code == 0
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    for row in rows:
        if row["system"] == "jpeg-q50" and row["metric"] == "psnr":
            row["value"] -= 3.0  # a deliberately worse reconstruction
    worse = tmp_path / "worse.jsonl"
    worse.write_text("".join(json.dumps(x) + "\n" for x in rows))
    r = CliRunner().invoke(main, ["check", str(worse), "--baseline", str(base)])
    assert r.exit_code == 1 and "regressed" in r.output and "jpeg-q50/psnr" in r.output
    for row in rows:
        row["provenance"]["detector"] = "inception-v3-compat"
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(x) + "\n" for x in rows))
    r = CliRunner().invoke(main, ["check", str(other), "--baseline", str(base)])
    assert r.exit_code == 2 and "different provenance" in r.output
    doc = json.loads(base.read_text())
    del doc["metrics"]["pixel/ssim"]  # a metric the baseline does not know yet: said, not silently ignored
    older = tmp_path / "older.json"
    older.write_text(json.dumps(doc))
    r = CliRunner().invoke(main, ["check", str(results), "--baseline", str(older)])
    assert r.exit_code == 0 and "not in the baseline" in r.output and "pixel/ssim" in r.output


def test_committed_smoke_baseline_is_valid():
    path = Path(__file__).resolve().parent.parent / "reports" / "baselines" / "smoke.json"
    data = json.loads(path.read_text())
    assert data["format"] == "ulbench-baseline/1" and any(k.endswith("/bpp") for k in data["metrics"])
