"""Seeds and significance (issue 14): seed expansion of suites, mean ± SE over seeds, and when a direction counts."""

from __future__ import annotations

import pytest

from ulbench.config import load_suite, seed_group
from ulbench.report.significance import Estimate, direction, paper_direction, verdict
from ulbench.report.tables import main_table, orderings


def test_seeds_expand_runs_and_seed_zero_is_the_run_as_written():
    one, three = load_suite("smoke"), load_suite("smoke", ["seeds=3"])
    assert [r.name for r in three.runs][:3] == ["ul", "ul@seed1", "ul@seed2"]
    ul0, ul1 = three.runs[0], three.runs[1]
    assert ul0 == one.runs[0] and ul0.config_hash(three) == one.runs[0].config_hash(one)  # reuse of seed 0
    assert ul1.stage1["seed"] == ul1.base["seed"] == ul1.bound["seed"] == 1
    assert ul1.config_hash(three) != ul0.config_hash(three)
    assert seed_group("ul@seed2") == ("ul", 2) and seed_group("ul") == ("ul", 0)
    with pytest.raises(ValueError, match="seeds must be a positive integer"):
        load_suite("smoke", ["seeds=0"])


def test_direction_uses_welch_with_seeds_and_image_stderr_with_one():
    base = Estimate((1.0, 1.1, 0.9), (0.05,) * 3)
    assert direction(Estimate((2.0, 2.1, 1.9), (0.05,) * 3), base)[0] == "up"
    got, p = direction(Estimate((1.05, 1.3, 0.8), (0.05,) * 3), base)
    assert got == "not resolved" and p > 0.5  # overlapping seeds: no direction, whatever the point estimates say
    # one seed: z-test with the per-image standard errors
    assert direction(Estimate((0.50,), (0.01,)), Estimate((0.40,), (0.01,)))[0] == "up"
    assert direction(Estimate((0.41,), (0.01,)), Estimate((0.40,), (0.01,)))[0] == "not resolved"
    assert direction(Estimate((3.0,), (None,)), Estimate((1.0,), (None,))) == ("not resolved", None)  # FID, 1 seed


def test_paper_changes_under_five_percent_are_no_change():
    assert paper_direction(0.06, 0.059) == "no change" and paper_direction(0.121, 0.059) == "up"
    assert verdict("no change", "not resolved", 0.4).endswith("consistent")
    assert verdict("up", "down", 0.01) == "paper up, ours down, p=0.01: NOT reproduced"
    assert verdict("up", "not resolved", 0.2) == "paper up, ours not resolved, p=0.2"


def _rows(system, bpp, se, seed_group=None, paper=None):
    extra = {"paper": paper or {}, "run_label": system.split("@")[0]}
    if seed_group:
        extra["seed_group"] = seed_group
    return {"system": system, "metric": "bpp", "value": bpp, "stderr": se, "status": "ok", "extra": extra}


def test_tables_average_seeds_and_orderings_call_only_resolved_moves():
    paper_b, paper_r = {"bpp": 0.059}, {"bpp": 0.121}
    rows = [_rows("baseline", 0.178, 0.003, paper=paper_b), _rows("baseline@seed1", 0.182, 0.003, paper=paper_b),
            _rows("sep", 0.30, 0.004, paper=paper_r), _rows("sep@seed1", 0.32, 0.004, paper=paper_r),
            _rows("noisy", 0.181, 0.003, paper={"bpp": 0.008}), _rows("noisy@seed1", 0.177, 0.003,
                                                                          paper={"bpp": 0.008})]
    table = main_table(rows, with_paper=True)
    assert list(table["system"]) == ["baseline", "sep", "noisy"]
    cell = table.loc["baseline"].iloc[1]
    assert cell.startswith("0.18 ± 0.0021") and "[seeds ± 0.002, N=2]" in cell
    order = orderings(rows).set_index("row")
    assert order.loc["sep", "bpp"].startswith("paper up, ours up") and order.loc["sep", "bpp"].endswith("reproduced")
    assert order.loc["noisy", "bpp"].startswith("paper down, ours not resolved")
    assert order.loc["sep", "seeds"] == "2 vs 2"
