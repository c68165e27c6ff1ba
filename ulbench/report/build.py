"""Write NAME.md and a self-contained NAME.html (images embedded as data URIs) from result rows."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from ulbench.report import plots, tables
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


def build_report(paths: list[str], out: str, title: str | None = None) -> tuple[Path, Path]:
    """Render the tables, plots, sample grids and provenance of result files into out.md and out.html."""
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
    grids = []
    for r in rows:
        for kind, p in (r.get("extra", {}).get("grids") or {}).items():
            if Path(p).is_file() and (r["system"], kind) not in [(g[0], g[1]) for g in grids]:
                grids.append((r["system"], kind, Path(p).read_bytes()))

    md = [f"# {title}", ""]
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
    md += ["## Results", "", f"Columns: {ours}" + (f"; {tables.PAPER_PROVENANCE}" if with_paper else ""), "",
           main.to_markdown(index=False), "", "↑ higher is better, ↓ lower is better; ± standard error over images. "
           "FLOPs follow fvcore (1 multiply-add = 1 FLOP).", ""]
    html_parts += ["<h2>Results</h2>", f"<p>Columns: {html.escape(ours)}"
                   + (f"; {html.escape(tables.PAPER_PROVENANCE)}" if with_paper else "") + "</p>", _df_html(main),
                   "<p>↑ higher is better, ↓ lower is better; ± standard error over images. FLOPs follow fvcore "
                   "(1 multiply-add = 1 FLOP).</p>"]
    if order is not None:
        md += ["## Orderings against the baseline (paper vs ours)", "", order.to_markdown(index=False), ""]
        html_parts += ["<h2>Orderings against the baseline (paper vs ours)</h2>", _df_html(order)]
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
            fname = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{system}-{kind}") + ".png"
            (assets / fname).write_bytes(png)
            md.append(f"![{system} {kind}]({name}_files/{fname})")
            html_parts.append(f"<div class='grid'><img alt='{html.escape(system)} {html.escape(kind)}' "
                              f"src='{_data_uri(png)}'><br>{html.escape(system)}: {html.escape(kind)}</div>")
        md.append("")
    if warnings:
        md += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
        html_parts += ["<h2>Warnings</h2><ul>"] + [f"<li>{html.escape(w)}</li>" for w in warnings] + ["</ul>"]
    md += ["## Provenance", "", prov.to_markdown(index=False), ""]
    html_parts += ["<h2>Provenance</h2>", f"<div class='prov'>{_df_html(prov)}</div>"]
    md_path, html_path = out_path.with_suffix(".md"), out_path.with_suffix(".html")
    atomic_write_text(md_path, "\n".join(md))
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{CSS}</style></head><body>{''.join(html_parts)}</body></html>")
    atomic_write_text(html_path, doc)
    return md_path, html_path


