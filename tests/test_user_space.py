"""Bring your own latent space (issue 12): a space from a test module, never registered in ulbench, through the
registry forms (module:factory[:ARG], register_space), `ulbench eval`, a suite row with gFID, and `compare`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import ulbench
from ulbench.cli import main
from ulbench.registry import SPACES

SPEC = "tests.user_space:make_space"


def test_module_factory_spec_passes_its_argument_and_is_checked():
    assert SPACES.build(f"{SPEC}:2").info().downsample_factor == 2
    assert SPACES.build(SPEC).info().downsample_factor == 4
    with pytest.raises(ValueError, match="has no callable 'nope'"):
        SPACES.build("tests.user_space:nope")
    with pytest.raises(TypeError, match="not a latent space: it lacks encode, decode, reconstruct, info"):
        SPACES.build("tests.test_user_space:not_a_space")


def not_a_space():
    return object()


def test_register_space_validates_name_signature_and_duplicates():
    from tests.user_space import make_space

    ulbench.register_space("pool{N}", make_space, "4x pooling", pattern=r"pool(?P<factor>\d+)", replace=True)
    assert SPACES.build("pool8").info().downsample_factor == 8
    with pytest.raises(ValueError, match="already registered"):
        ulbench.register_space("pool{N}", make_space, pattern=r"pool(?P<factor>\d+)")
    with pytest.raises(ValueError, match="already registered"):
        ulbench.register_space("pixel", make_space)
    with pytest.raises(TypeError, match=r"does not take the pattern's groups \['q'\]"):
        ulbench.register_space("badq{N}", lambda factor=4: None, pattern=r"badq(?P<q>\d+)")
    with pytest.raises(TypeError, match=r"needs arguments \['path'\]"):
        ulbench.register_space("needs-path", lambda path: None)
    with pytest.raises(ValueError, match="lower-case"):
        ulbench.register_space("Bad Name", make_space)


def test_eval_cli_on_a_module_space_measures_what_the_space_does():
    rows = {}
    for factor in (2, 4):
        res = CliRunner().invoke(main, ["eval", "--space", f"{SPEC}:{factor}", "--metrics", "psnr,rfid",
                                        "--detector", "proxy", "--limit", "32", "--json", "--no-cache"])
        assert res.exit_code == 0, res.output
        rows[factor] = {r["metric"]: r for r in map(json.loads, res.stdout.strip().splitlines())
                        if r["metric"] in ("psnr", "rfid")}
    assert rows[2]["psnr"]["system"] == "pool2" and rows[2]["psnr"]["n"] == 32
    assert rows[2]["psnr"]["value"] > rows[4]["psnr"]["value"] + 1  # the factor is really used
    assert rows[2]["rfid"]["value"] < rows[4]["rfid"]["value"]
    assert rows[4]["psnr"]["provenance"]["system_info"]["provenance"] == {"module": "tests.user_space", "factor": 4}
    assert "diffusion_target" not in rows[4]["psnr"]["provenance"]["capabilities"]
    res = CliRunner().invoke(main, ["eval", "--space", SPEC, "--metrics", "bpp", "--limit", "4"])
    assert res.exit_code == 2 and "this space reports no bits" in res.output


def test_python_api_evaluate_and_load_space():
    space = ulbench.load_space(f"{SPEC}:2")
    rows = ulbench.evaluate(space, metrics=["psnr"], limit=16)
    by_api = rows.value("psnr")
    from ulbench.data import load_dataset
    from ulbench.metrics.psnr_ssim import PSNR  # noqa: F401  (the registered metric the rows come from)

    x, _ = load_dataset("embedded", split="eval").get(np.arange(16))
    x_hat = space.reconstruct(x, torch.arange(16)).x_hat
    mse = ((x.double() - x_hat.double()) ** 2).mean(dim=(1, 2, 3))
    assert by_api == pytest.approx(float((10 * torch.log10(255.0 ** 2 / mse)).mean()), rel=1e-9)
    df = rows.to_pandas()
    assert list(df["metric"]) == ["psnr"] and df["system"][0] == "pool2"


MINI = """
include: [{common}]
eval: {{num_eval: 32, num_gen: 32, sample_steps: 2, decode_steps: 2, metrics: [bpp, psnr, rfid, gfid], detector: proxy}}
defaults:
  base: {{steps: 3, checkpoint_every: 3, batch_size: 16, channels: [16, 32]}}
  bound: {{steps: 3, batch_size: 16, channels: [16], draws: 2}}
runs:
  - {{name: mine, system: space, space: "{spec}"}}
  - {{name: jpeg-q10, system: space, space: jpeg-q10}}
"""


def test_suite_gives_a_module_space_a_base_model_gfid_bound_and_costs(tmp_path):
    from ulbench.config import SUITES_DIR

    suite = tmp_path / "mine.yaml"
    suite.write_text(MINI.format(common=SUITES_DIR / "_common.yaml", spec=f"{SPEC}:2"))
    plan = CliRunner().invoke(main, ["run", "--suite", str(suite), "--out", str(tmp_path / "out"), "--dry-run"])
    assert plan.exit_code == 0, plan.output
    stage2 = {r["run"]: r["stage2"] for r in json.loads(plan.stdout)["runs"]}
    assert stage2["mine"]["base_model"] is True and stage2["mine"]["gfid"] == "run"
    assert stage2["jpeg-q10"] == {"base_model": False, "gfid": "skipped",
                                  "why": "jpeg-q10 has no continuous latents for a base model"}
    res = CliRunner().invoke(main, ["run", "--suite", str(suite), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    rows = {(r["system"], r["metric"]): r for r in
            map(json.loads, (tmp_path / "out" / "results.jsonl").read_text().splitlines())}
    assert rows[("mine", "gfid")]["status"] == "ok" and rows[("mine", "gfid")]["value"] > 0
    assert rows[("mine", "bpp_ul_bound")]["value"] > 0  # rate None: the suite fits the UL bound
    assert rows[("mine", "train_flops")]["value"] > 0  # the base model's training
    assert rows[("mine", "train_flops")]["extra"]["stage1_cost"] == "given space: not counted"
    assert rows[("jpeg-q10", "gfid")]["status"] == "skipped"


def test_compare_names_a_module_space(tmp_path):
    sets = ["--set", "eval.num_eval=16", "--set", "eval.num_gen=16", "--set", "eval.sample_steps=2",
            "--set", "eval.decode_steps=2", "--set", "eval.metrics=[psnr,bpp,gfid]",
            "--set", "defaults.base.steps=2", "--set", "defaults.base.batch_size=8",
            "--set", "defaults.bound.steps=2", "--set", "defaults.bound.batch_size=8",
            "--set", "eval.detector=proxy"]  # fast: the detector is not what this tests (EffNet: test_effnet)
    res = CliRunner().invoke(main, ["compare", f"{SPEC}:2", "jpeg-q10", "--out", str(tmp_path / "c"), *sets])
    assert res.exit_code == 0, res.output
    assert "tests.user_space-make_space-2" in res.output and "jpeg-q10" in res.output
    res = CliRunner().invoke(main, ["compare", "no.such.module:f", "--out", str(tmp_path / "c")])
    assert res.exit_code != 0 and "cannot import module 'no.such.module'" in res.output
