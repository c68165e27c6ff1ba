"""Write NAME.md and a self-contained NAME.html (images embedded as data URIs) from result rows."""

from __future__ import annotations

import base64
import html
import re
import sys
from pathlib import Path
from typing import Callable

from ulbench.config import seed_group
from ulbench.markdown import markdown_table, md_escape
from ulbench.report import plots, tables
from ulbench.report.significance import ORDERING_RULE
from ulbench.results import atomic_write_text, read_rows

CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.prov{font-size:11px}
.warn{background:#fff3cd;padding:6px 10px;border-left:4px solid #e0a800}img{max-width:100%}
.grid{display:inline-block;margin:6px;text-align:center;font-size:12px}"""


def _df_html(df) -> str:
    return df.to_html(escape=True, index=False, na_rep="–", border=0)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _grid_file(system: str, kind: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{system}-{kind}") + ".png"


def find_grid(stored: str, fname: str, results_dirs: list[Path], assets: Path) -> Path | None:
    """A sample grid's PNG: where the row says (absolute or from the working directory), then relative to the
    results file's folder, then the copy a report rendered next to the results (`*_files/`, e.g. a committed
    `reports/smoke/report_files/`), then this report's own earlier copy; None when none exists."""
    candidates = [Path(stored)] + [d / stored for d in results_dirs]
    candidates += [f / fname for d in results_dirs for f in sorted(d.glob("*_files"))] + [assets / fname]
    return next((c for c in candidates if c.is_file()), None)


def _notes_html(notes: str) -> str:
    """The authors' Markdown notes as escaped HTML paragraphs and list items (no Markdown renderer needed)."""
    parts = []
    for block in notes.strip().split("\n\n"):
        lines = [ln.strip() for ln in block.splitlines() if ln.strip()]
        if lines and all(ln.startswith(("- ", "* ")) for ln in lines):
            parts.append("<ul>" + "".join(f"<li>{html.escape(ln[2:])}</li>" for ln in lines) + "</ul>")
        elif lines and lines[0].startswith("#"):
            parts.append(f"<h3>{html.escape(lines[0].lstrip('#').strip())}</h3>"
                         + (f"<p>{html.escape(' '.join(lines[1:]))}</p>" if lines[1:] else ""))
        elif lines:
            parts.append(f"<p>{html.escape(' '.join(lines))}</p>")
    return "".join(parts)


def build_report(paths: list[str], out: str, title: str | None = None, notes: str | None = None,
                 log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> tuple[Path, Path]:
    """Render the tables, plots, sample grids and provenance of result files into out.md and out.html, with the
    authors' reading of the rows (`notes`, Markdown) after the orderings (issue 14: explain every row). Grids (seed
    0's stand for a run's other seeds) are copied into `out_files/` and embedded in the HTML, so the report
    re-renders from any checkout; a grid that cannot be found is said once (to `log` and in the report's
    warnings), never dropped silently."""
    rows = read_rows(paths)
    if not rows:
        raise ValueError("no result rows to report")
    out_path = Path(out)
    name = out_path.name
    out_path.parent.mkdir(parents=True, exist_ok=True)
    assets = out_path.parent / f"{name}_files"
    assets.mkdir(exist_ok=True)
    suite = rows[0].get("provenance", {}).get("suite", name)
    title = title or f"ulbench report: {suite}"
    proxy = any(r.get("proxy") for r in rows)
    with_paper = any(r.get("extra", {}).get("paper") for r in rows)
    main = tables.main_table(rows, with_paper)
    order = tables.orderings(rows)
    prov = tables.provenance_block(rows)
    ours = tables.ours_provenance(rows)
    figures = {"rate_distortion": plots.rate_distortion(rows, proxy), "cost_quality": plots.cost_quality(rows, proxy)}
    warnings = sorted({w for r in rows for w in r.get("warnings", [])})
    results_dirs = list(dict.fromkeys(Path(p) if Path(p).is_dir() else Path(p).parent for p in paths))
    grids, seen, missing = [], set(), []
    for r in rows:
        if seed_group(r["system"])[1] > 0:
            continue  # one run's grids stand for its training seeds (the tables average them)
        for kind, p in (r.get("extra", {}).get("grids") or {}).items():
            if (r["system"], kind) in seen:
                continue
            seen.add((r["system"], kind))
            found = find_grid(p, _grid_file(r["system"], kind), results_dirs, assets)
            if found is None:
                missing.append(f"sample grid '{kind}' of {r['system']} not found at {p} nor next to the results "
                               f"(*_files/{_grid_file(r['system'], kind)}); left out of this report")
            else:
                grids.append((r["system"], kind, found.read_bytes()))
    for m in missing:
        log(f"warning: {m}")
    warnings = sorted(set(warnings) | set(missing))

    md = [f"# {md_escape(title)}", ""]
    html_parts = [f"<h1>{html.escape(title)}</h1>"]
    if proxy:
        note = ("rFID/gFID/FVD here use an offline PROXY detector (fixed random conv features): they rank "
                "systems but are NOT FID/FVD and not comparable to published numbers.")
        md += [f"> **{note}**", ""]
        html_parts.append(f"<p class='warn'><b>{html.escape(note)}</b></p>")
    fd = tables.frechet_header(rows, "rfid")
    if not proxy and "FD-" in fd:
        note = (f"{fd} / {tables.frechet_header(rows, 'gfid')}: Fréchet distances on "
                f"{tables.ours_provenance(rows).split('detector ')[-1].split(' sha256')[0]} features, not FID "
                "(FID is Inception's): they rank systems, not comparable to published FID.")
        md += [f"> {note}", ""]
        html_parts.append(f"<p class='warn'>{html.escape(note)}</p>")
    md += ["## Results", "", f"Columns: {md_escape(ours)}" + (f"; {tables.PAPER_PROVENANCE}" if with_paper else ""), "",
           markdown_table(main, index=False), "", "↑ higher is better, ↓ lower is better; ± standard error over images "
           "(with several training seeds: the mean over seeds, and [seeds ± standard error over seeds, N]). "
           "FLOPs follow fvcore (1 multiply-add = 1 FLOP).", ""]
    html_parts += ["<h2>Results</h2>", f"<p>Columns: {html.escape(ours)}"
                   + (f"; {html.escape(tables.PAPER_PROVENANCE)}" if with_paper else "") + "</p>", _df_html(main),
                   "<p>↑ higher is better, ↓ lower is better; ± standard error over images (with several training "
                   "seeds: the mean over seeds, and [seeds ± standard error over seeds, N]). FLOPs follow fvcore "
                   "(1 multiply-add = 1 FLOP).</p>"]
    if order is not None:
        md += ["## Orderings against the baseline (paper vs ours)", "", markdown_table(order, index=False), "",
               ORDERING_RULE, ""]
        html_parts += ["<h2>Orderings against the baseline (paper vs ours)</h2>", _df_html(order),
                       f"<p>{html.escape(ORDERING_RULE)}</p>"]
    if notes and notes.strip():
        md += ["## Reading of the results", "", notes.strip(), ""]
        html_parts += ["<h2>Reading of the results</h2>", f"<div class='notes'>{_notes_html(notes)}</div>"]
    for key, png in figures.items():
        if png is None:
            continue
        (assets / f"{key}.png").write_bytes(png)
        label = key.replace("_", "-")
        md += [f"## {label}", "", f"![{label}]({name}_files/{key}.png)", ""]
        html_parts += [f"<h2>{label}</h2>", f"<img alt='{label}' src='{_data_uri(png)}'>"]
    if grids:
        md += ["## Samples", ""]
        html_parts.append("<h2>Samples</h2>")
        for system, kind, png in grids:
            fname = _grid_file(system, kind)
            (assets / fname).write_bytes(png)
            md.append(f"![{md_escape(system)} {md_escape(kind)}]({name}_files/{fname})")
            html_parts.append(f"<div class='grid'><img alt='{html.escape(system)} {html.escape(kind)}' "
                              f"src='{_data_uri(png)}'><br>{html.escape(system)}: {html.escape(kind)}</div>")
        md.append("")
    if warnings:
        md += ["## Warnings", ""] + [f"- {md_escape(w)}" for w in warnings] + [""]
        html_parts += ["<h2>Warnings</h2><ul>"] + [f"<li>{html.escape(w)}</li>" for w in warnings] + ["</ul>"]
    md += ["## Provenance", "", markdown_table(prov, index=False), ""]
    html_parts += ["<h2>Provenance</h2>", f"<div class='prov'>{_df_html(prov)}</div>"]
    md_path, html_path = out_path.with_suffix(".md"), out_path.with_suffix(".html")
    atomic_write_text(md_path, "\n".join(md))
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{CSS}</style></head><body>{''.join(html_parts)}</body></html>")
    atomic_write_text(html_path, doc)
    return md_path, html_path


