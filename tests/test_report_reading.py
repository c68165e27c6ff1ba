"""The report carries the authors' reading of its rows (issue 14: explain every row) in Markdown and safe HTML."""

from click.testing import CliRunner

from ulbench.cli import main
from ulbench.results import ResultRow, write_rows


def _rows():
    prov = {"dataset": "embedded", "split": "eval", "resolution": 32, "n": 8}
    return [ResultRow(run_id="r", system=s, metric="bpp", value=v, n=8, provenance=prov, higher_is_better=False,
                      extra={"run_label": s}) for s, v in (("baseline", 0.2), ("noisy-latents", 0.1))]


def test_notes_are_rendered_after_the_tables_and_escaped_in_html(tmp_path):
    write_rows(tmp_path / "r.jsonl", _rows())
    notes = tmp_path / "notes.md"
    notes.write_text("- noisy-latents: bpp falls 2x, the λ₀ = 0 ceiling <b>binds</b>.\n- baseline: reference.\n")
    res = CliRunner().invoke(main, ["report", str(tmp_path / "r.jsonl"), "--out", str(tmp_path / "rep"),
                                    "--notes", str(notes)])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "rep.md").read_text()
    assert md.index("## Reading of the results") > md.index("## Results")
    assert "the λ₀ = 0 ceiling <b>binds</b>" in md  # the authors' Markdown, as written
    html = (tmp_path / "rep.html").read_text()
    assert "<li>noisy-latents: bpp falls 2x, the λ₀ = 0 ceiling &lt;b&gt;binds&lt;/b&gt;.</li>" in html
    without = CliRunner().invoke(main, ["report", str(tmp_path / "r.jsonl"), "--out", str(tmp_path / "plain")])
    assert without.exit_code == 0 and "Reading of the results" not in (tmp_path / "plain.md").read_text()
    missing = CliRunner().invoke(main, ["report", str(tmp_path / "r.jsonl"), "--out", str(tmp_path / "x"),
                                        "--notes", str(tmp_path / "nope.md")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_seed_zero_grids_stand_for_the_other_seeds(tmp_path):
    from PIL import Image

    from ulbench.report import build_report

    rows = []
    for system in ("baseline", "baseline@seed1"):
        png = tmp_path / f"{system}.png"
        Image.new("RGB", (4, 4), (255, 0, 0)).save(png)
        rows.append(ResultRow(run_id="r", system=system, metric="bpp", value=0.2, n=8, higher_is_better=False,
                              provenance={"dataset": "embedded", "split": "eval", "resolution": 32, "n": 8},
                              extra={"run_label": "UL", "seed_group": "baseline", "grids": {"generations": str(png)}}))
    write_rows(tmp_path / "r.jsonl", rows)
    md, _ = build_report([str(tmp_path / "r.jsonl")], str(tmp_path / "rep"), log=lambda m: None)
    text = md.read_text()
    assert "![baseline generations]" in text and "baseline@seed1 generations" not in text


def test_sweep_points_sharing_a_label_are_named_by_run():
    from ulbench.report.tables import main_table

    prov = {"dataset": "embedded", "split": "eval", "resolution": 32, "n": 8}
    rows = [ResultRow(run_id="r", system=s, metric="bpp", value=v, n=8, provenance=prov, higher_is_better=False,
                      extra={"run_label": "UL, c_lf sweep"}).__dict__
            for s, v in (("clf-c_lf3", 0.06), ("clf-c_lf30", 0.28))]
    names = ["UL, c_lf sweep [clf-c_lf3]", "UL, c_lf sweep [clf-c_lf30]"]
    assert list(main_table(rows, with_paper=False)["system"]) == names
