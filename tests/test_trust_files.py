"""Issue 15, files and gate: concurrent appends, strict JSON, the CI gate, run names, Markdown cells, file modes,
broken symlinks. Each test here failed on the code before the fix."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

WRITERS, APPENDS, PER_APPEND, SEEDED = 4, 40, 3, 500


def _row(system: str, metric: str, value, run_id: str = "r1", **kw):
    from ulbench.results import ResultRow

    prov = {"dataset": "embedded", "split": "eval", "resolution": 32, "n": 8, **kw.pop("provenance", {})}
    return ResultRow(run_id=run_id, system=system, metric=metric, value=value, n=8, provenance=prov, **kw)


def _writer(path: str, k: int, barrier) -> None:
    from ulbench.results import append_rows

    barrier.wait()
    for i in range(APPENDS):
        append_rows(path, [_row(f"w{k}", "psnr", float(i), run_id=f"w{k}-{i}-{j}") for j in range(PER_APPEND)])


def _strict(text: str):
    def refuse(token):
        raise ValueError(f"non-strict JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_concurrent_appends_keep_every_row(tmp_path):
    """4 real processes append into one (already large) results file at once: every row survives, once."""
    from ulbench.results import append_rows

    path = tmp_path / "results.jsonl"
    append_rows(path, [_row("seed", "psnr", 1.0, run_id=f"s{i}") for i in range(SEEDED)])
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(WRITERS)
    procs = [ctx.Process(target=_writer, args=(str(path), k, barrier)) for k in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs)
    ids = [json.loads(line)["run_id"] for line in path.read_text().splitlines()]
    expected = {f"w{k}-{i}-{j}" for k in range(WRITERS) for i in range(APPENDS) for j in range(PER_APPEND)}
    assert len(ids) == SEEDED + len(expected), f"{len(ids)} of {SEEDED + len(expected)} rows survived"
    assert set(ids) == expected | {f"s{i}" for i in range(SEEDED)}


def _old_file(tmp_path) -> Path:
    """A results file as older code wrote it: bare NaN / Infinity tokens."""
    old = tmp_path / "old.jsonl"
    good = json.loads(_row("jpeg", "psnr", 30.0).to_json())
    old.write_text(json.dumps({**good, "stderr": float("nan")}) + "\n"
                   + json.dumps({**good, "system": "pixel", "value": float("inf")}) + "\n")
    assert "Infinity" in old.read_text() and "NaN" in old.read_text()
    return old


def test_rows_are_strict_json_and_old_files_still_read(tmp_path):
    from ulbench.results import append_rows, read_rows

    row = _row("pixel", "psnr", float("inf"), stderr=float("nan"), extra={"per_image": [1.0, float("inf")]})
    doc = _strict(row.to_json())
    assert doc["value"] is None and doc["stderr"] is None and doc["extra"]["per_image"] == [1.0, None]
    assert doc["status"] == "failed" and "non-finite" in doc["reason"]  # never an "ok" row without a number
    old = _old_file(tmp_path)
    assert len(read_rows([old])) == 2
    append_rows(old, [row])  # appending rewrites the old lines too: the whole file becomes strict
    lines = [_strict(line) for line in old.read_text().splitlines()]
    assert len(lines) == 3 and lines[1]["status"] == "failed" and lines[0]["stderr"] is None
    for committed in (Path(__file__).resolve().parent.parent / "reports" / "baselines").glob("*.json"):
        _strict(committed.read_text())


def _gate(tmp_path, rows: list, baseline: dict | None = None, base_rows: list | None = None):
    from ulbench.cli import main
    from ulbench.results import write_rows

    base = tmp_path / "base.json"
    if baseline is not None:
        base.write_text(json.dumps(baseline))
    else:
        write_rows(tmp_path / "base.jsonl", base_rows)
        assert CliRunner().invoke(main, ["check", str(tmp_path / "base.jsonl"), "--baseline", str(base),
                                         "--update"]).exit_code == 0
    write_rows(tmp_path / "now.jsonl", rows)
    return CliRunner().invoke(main, ["check", str(tmp_path / "now.jsonl"), "--baseline", str(base)])


def test_baseline_written_from_an_old_file_is_strict_json(tmp_path):
    from ulbench.check import run_check

    base = tmp_path / "base.json"
    assert run_check([str(_old_file(tmp_path))], str(base), update=True)[0] == 0
    assert set(_strict(base.read_text())["metrics"]) == {"jpeg/psnr"}  # an infinite PSNR is no number to gate on


BASE = [("ul", "bpp", 1.2, False), ("ul", "rfid", 80.0, False), ("ul", "gfid", 120.0, False),
        ("ul", "psnr", 25.0, True)]


def _rows(**override):
    return [_row(s, m, override.get(f"{s}/{m}", v), higher_is_better=h) for s, m, v, h in BASE]


@pytest.mark.parametrize("metric, value", [("ul/bpp", 0.0), ("ul/rfid", 0.0), ("ul/gfid", 0.0),
                                           ("ul/psnr", float("inf"))])
def test_gate_does_not_pass_a_collapse_or_a_too_good_value(tmp_path, metric, value):
    res = _gate(tmp_path, _rows(**{metric: value}), base_rows=_rows())
    assert res.exit_code == 1, res.output
    assert metric in res.output and ("--update" in res.output or "failed" in res.output)


def test_gate_fails_on_an_empty_or_non_matching_baseline(tmp_path):
    res = _gate(tmp_path, _rows(), baseline={"format": "ulbench-baseline/1", "metrics": {}})
    assert res.exit_code == 1 and "no metrics" in res.output, res.output
    other = [_row("jpeg", "psnr", 30.0, higher_is_better=True)]
    res = _gate(tmp_path, _rows(), base_rows=other)
    assert res.exit_code == 1 and "none of the baseline" in res.output, res.output


def test_gate_picks_the_latest_run_by_order_not_by_a_missing_timestamp(tmp_path):
    """An older ok row with created_utc, then a regressed row of a later run without it: the later run is gated."""
    older = _rows()
    for r in older:
        r.provenance["created_utc"] = "2026-01-01T00:00:00+00:00"
    newer = [_row("ul", "psnr", 20.0, run_id="r2", higher_is_better=True)]
    res = _gate(tmp_path, older + newer, base_rows=_rows())
    assert res.exit_code == 1 and "regressed" in res.output, res.output
    failed = [_row("ul", "psnr", None, run_id="r2", status="failed", reason="decoder NaN", higher_is_better=True)]
    res = _gate(tmp_path, older + failed, base_rows=_rows())  # a failed latest run never falls back to an old ok
    assert res.exit_code == 1 and "failed" in res.output, res.output
    assert _gate(tmp_path, older, base_rows=_rows()).exit_code == 0


@pytest.mark.parametrize("name", ["../../escaped/x", "/tmp/ulbench-escaped-i15", "a/b", "a\\b", "..", "x y", ""])
def test_run_names_cannot_escape_out(tmp_path, name):
    from ulbench.cli import main

    suite = tmp_path / "evil.yaml"
    suite.write_text(json.dumps({"runs": [{"name": name, "system": "jpeg", "space": "jpeg-q10"}]}))
    out = tmp_path / "a" / "b" / "out"
    res = CliRunner().invoke(main, ["run", "--suite", str(suite), "--out", str(out), "--no-report"])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "run name" in lines[0], res.output
    assert not (out.parent / "escaped").exists() and not out.exists()  # ../../escaped from out/runs
    assert not list(Path("/tmp").glob("ulbench-escaped-i15*"))


def test_seed_and_sweep_run_names_stay_valid():
    from ulbench.config import load_suite

    names = [r.name for r in load_suite("bitrate", ["seeds=2"]).runs]
    assert "bias-bias_b-2@seed1" in names


def test_markdown_cells_are_escaped(tmp_path):
    from ulbench.report import build_report
    from ulbench.results import write_rows

    label = "evil | <script>alert(1)</script> & co"
    rows = [_row("evil|sys", m, v, higher_is_better=h, label=m, extra={"run_label": label})
            for m, v, h in (("psnr", 25.0, True), ("bpp", 1.5, False))]
    rows.append(_row("plain", "psnr", 30.0, higher_is_better=True, extra={"run_label": "plain"}))
    write_rows(tmp_path / "r.jsonl", rows)
    md, _ = build_report([str(tmp_path / "r.jsonl")], str(tmp_path / "report"), log=lambda m: None)
    text = md.read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text and "&amp; co" in text
    for table in re.findall(r"(?:^\|.*\|$\n?)+", text, flags=re.M):
        lines = table.strip().splitlines()
        cells = [len(re.split(r"(?<!\\)\|", line)) for line in lines]
        assert len(set(cells)) == 1, table  # an unescaped | would shift cells under the wrong header


def test_written_files_keep_the_umask_mode(tmp_path):
    from ulbench.results import append_rows, atomic_write_text

    old = os.umask(0o022)
    try:
        existing = tmp_path / "results.jsonl"
        existing.write_text("")
        os.chmod(existing, 0o644)
        append_rows(existing, [_row("a", "psnr", 1.0)])
        assert existing.stat().st_mode & 0o777 == 0o644
        os.chmod(existing, 0o640)
        atomic_write_text(existing, "x\n")
        assert existing.stat().st_mode & 0o777 == 0o640
        os.umask(0o002)
        atomic_write_text(tmp_path / "new.json", "{}")
        assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(old)


def test_broken_symlinks_in_an_image_folder_are_counted_and_reported(tmp_path):
    import numpy as np
    from PIL import Image

    from ulbench.data.folder import ImageFolderDataset

    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)).save(root / f"img{i}.png")
    (root / "gone1.png").symlink_to(tmp_path / "missing1.png")
    (root / "gone2.jpg").symlink_to(tmp_path / "missing2.jpg")
    with pytest.warns(UserWarning, match=r"2 broken symlink"):
        ds = ImageFolderDataset(str(root), split="all")
    assert len(ds) == 3 and ds.info()["skipped_broken_links"] == 2
