"""Side-by-side tables of result rows that refuse to mix provenance (PEERS pitfall 1)."""

from __future__ import annotations

import json
import math
from typing import Any

from ulbench.markdown import markdown_table
from ulbench.results import COMPARABLE_FIELDS, provenance_conflicts, read_rows, rows_frame

RUN_FIELDS = (*COMPARABLE_FIELDS, "config_hash")  # rows equal in these measured the same thing the same way
SERIES_METRICS = ("gfid_curve",)  # points along training (one per checkpoint): plotted, not a table's endpoint


class ProvenanceMismatch(ValueError):
    """Numbers of one metric were produced under different protocols."""


def _run_key(row: dict[str, Any]) -> str:
    prov = row.get("provenance", {})
    return json.dumps({f: prov.get(f) for f in RUN_FIELDS}, sort_keys=True, default=str)


def distinct_runs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (system, metric, protocol + config hash): repeated measurements of the same thing collapse to
    the newest; rows that differ in any of RUN_FIELDS all stay (and `check_comparable` then refuses them)."""
    newest: dict[tuple[str, str, str], dict] = {}
    for r in rows:  # later in the files = newer (results are appended): order, not a timestamp a row may lack
        newest[(r["system"], r["metric"], _run_key(r))] = r
    return list(newest.values())


def _system_conflicts(rows: list[dict[str, Any]]) -> list[str]:
    """Lines naming each (system, metric) measured more than one way and the fields that differ."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["system"], r["metric"]), []).append(r)
    lines = []
    for (system, metric), group in sorted(groups.items()):
        if len(group) < 2:
            continue
        diffs = []
        for f in RUN_FIELDS:
            vals = {json.dumps(r.get("provenance", {}).get(f), sort_keys=True, default=str) for r in group}
            if len(vals) > 1:
                diffs.append(f"{f} differs: {' vs '.join(sorted(vals))}")
        lines.append(f"  {system} {metric}: {len(group)} runs; " + "; ".join(diffs))
    return lines


def check_comparable(rows: list[dict[str, Any]]) -> None:
    """Raise ProvenanceMismatch naming each system measured more than one way and each metric and field whose
    provenance differs between systems."""
    conflicts = provenance_conflicts(rows)
    lines = _system_conflicts(rows)
    if conflicts or lines:
        lines += [f"  {metric}: {field} differs: {' vs '.join(sorted(vals))}"
                  for metric, fields in sorted(conflicts.items()) for field, vals in sorted(fields.items())]
        raise ProvenanceMismatch("refusing to compare numbers with different provenance:\n" + "\n".join(lines)
                                 + "\nre-run the systems under the same protocol (data, detector, n, resize), or "
                                 "compare one run per system (pass only its result file).")


def latest_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the newest row per (system, metric), whatever its status: the last in file order (files in the order
    given, lines as appended), never by a timestamp a row may lack (the regression gate checks the latest run;
    `compare` keeps every distinct run: `distinct_runs`)."""
    newest: dict[tuple[str, str], dict] = {}
    for r in rows:
        newest[(r["system"], r["metric"])] = r
    return list(newest.values())


FAILED_MARK = "failed"  # a number that was attempted and is not a number (NaN/inf, a NaN decoder); "–": not measured


def format_value(value: float | None, stderr: float | None) -> str:
    """'12.34 ± 0.05' with 4 significant digits; "–" when not measured, "failed" when NaN/inf (never "–")."""
    if value is None:
        return "–"
    if not math.isfinite(float(value)):
        return FAILED_MARK
    return f"{value:.4g}" + (f" ± {stderr:.2g}" if stderr is not None and stderr == stderr else "")


def pivot(rows: list[dict[str, Any]], metrics: list[str] | None = None):
    """System × metric DataFrame of formatted values, columns labelled with ↑/↓ and proxy."""
    df = rows_frame(rows)
    if metrics:
        df = df[df["metric"].isin(metrics)]
    df = df.assign(cell=[format_value(v, s) if st == "ok" else f"{st}: {rs}"
                         for v, s, st, rs in zip(df["value"], df["stderr"], df["status"], df["reason"])])
    arrows = {m: ("↑" if h else "↓") for m, h in zip(df["metric"], df["higher_is_better"])}
    labels = {m: (lbl or m) for m, lbl, st in zip(df["metric"], df["label"], df["status"]) if st == "ok"}
    labels.update({m: m for m in df["metric"] if m not in labels})
    table = df.pivot_table(index="system", columns="metric", values="cell", aggfunc="first")
    return table.rename(columns={m: f"{labels[m]} {arrows[m]}" for m in table.columns})


def compare_table(paths: list[str], metrics: list[str] | None = None) -> str:
    """Markdown table across systems from result files, after the provenance check: every distinct run is
    checked, so one system measured two ways (say n=700 and n=8) is refused, never silently reduced to one row."""
    rows = distinct_runs(read_rows(paths))
    rows = [r for r in rows if r["metric"] in metrics] if metrics else \
        [r for r in rows if r["metric"] not in SERIES_METRICS]
    if not rows:
        raise ValueError("no result rows to compare")
    check_comparable(rows)
    return markdown_table(pivot(rows))
