"""Metric regression gate: compare result rows with a committed baseline under per-metric tolerances."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ulbench.compare import latest_rows
from ulbench.results import COMPARABLE_FIELDS, atomic_write_text, read_rows

# metric -> (kind, tolerance): "abs" in the metric's unit or "rel" fraction of the baseline value
TOLERANCES = {"psnr": ("abs", 0.5), "ssim": ("abs", 0.02), "lpips": ("abs", 0.02), "bpp": ("rel", 0.15),
              "bpp_entropy": ("rel", 0.05), "bpp_ul_bound": ("rel", 0.15),
              "rfid": ("rel", 0.25), "gfid": ("rel", 0.25), "kid": ("abs", 0.005),
              "train_flops": ("rel", 1e-6), "sample_flops": ("rel", 1e-6)}
FLOORS = {"rfid": 1e-3, "gfid": 1e-3, "kid": 1e-4}  # absolute slack for distances near 0


def _key(row: dict[str, Any]) -> str:
    return f"{row['system']}/{row['metric']}"


def _protocol(row: dict[str, Any]) -> dict[str, Any]:
    return {f: row.get("provenance", {}).get(f) for f in COMPARABLE_FIELDS}


def make_baseline(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Baseline document: value, direction, tolerance and protocol of every ok row."""
    out = {}
    for r in latest_rows(rows):
        if r.get("status", "ok") != "ok" or r["value"] is None:
            continue
        kind, tol = TOLERANCES.get(r["metric"], ("rel", 0.1))
        out[_key(r)] = {"value": float(r["value"]), "higher_is_better": bool(r["higher_is_better"]),
                        "tolerance": tol, "tolerance_kind": kind, "protocol": _protocol(r)}
    return {"format": "ulbench-baseline/1", "metrics": out}


def check(rows: list[dict[str, Any]], baseline: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Per metric: status ok / regressed / improved / missing; refusals for protocol differences."""
    current = {_key(r): r for r in latest_rows(rows) if r.get("status", "ok") == "ok" and r["value"] is not None}
    report, refusals = [], []
    for key, ref in sorted(baseline["metrics"].items()):
        row = current.get(key)
        if row is None:
            report.append({"metric": key, "baseline": ref["value"], "current": None, "status": "missing"})
            continue
        proto = _protocol(row)
        diffs = [f"{f}: {ref['protocol'].get(f)!r} vs {proto.get(f)!r}" for f in COMPARABLE_FIELDS
                 if json.dumps(ref["protocol"].get(f), sort_keys=True) != json.dumps(proto.get(f), sort_keys=True)]
        if diffs:
            refusals.append(f"{key}: " + "; ".join(diffs))
            continue
        value, base = float(row["value"]), ref["value"]
        allowed = ref["tolerance"] * (abs(base) if ref["tolerance_kind"] == "rel" else 1.0)
        allowed = max(allowed, FLOORS.get(key.rsplit("/", 1)[-1], 0.0))
        if value == base:  # also identical infinities (PSNR of an exact reconstruction)
            report.append({"metric": key, "baseline": base, "current": value, "delta": 0.0, "allowed": allowed,
                           "status": "ok"})
            continue
        delta = value - base
        better = delta > 0 if ref["higher_is_better"] else delta < 0
        status = "ok" if abs(delta) <= allowed else ("improved" if better else "regressed")
        report.append({"metric": key, "baseline": base, "current": value, "delta": delta, "allowed": allowed,
                       "status": status})
    report += [{"metric": key, "baseline": None, "current": float(current[key]["value"]), "status": "new"}
               for key in sorted(set(current) - set(baseline["metrics"]))]
    return report, refusals


def run_check(paths: list[str], baseline_path: str, update: bool = False) -> tuple[int, str]:
    """Exit code and a Markdown table: 1 when anything regressed or is missing, 2 when refused."""
    import pandas as pd

    rows = read_rows(paths)
    path = Path(baseline_path)
    if update:
        atomic_write_text(path, json.dumps(make_baseline(rows), indent=1, sort_keys=True))
        return 0, f"baseline written: {path} ({len(make_baseline(rows)['metrics'])} metrics)"
    if not path.is_file():
        raise ValueError(f"baseline {path} not found; create it with "
                         f"`ulbench check RESULTS --baseline {path} --update`")
    baseline = json.loads(path.read_text())
    report, refusals = check(rows, baseline)
    if refusals:
        return 2, ("refusing to check against a baseline with different provenance:\n  " + "\n  ".join(refusals)
                   + "\nre-run under the baseline's protocol, or refresh it with --update")
    table = pd.DataFrame(report).to_markdown(index=False)
    bad = [r for r in report if r["status"] in ("regressed", "missing")]
    improved = [r for r in report if r["status"] == "improved"]
    new = [r["metric"] for r in report if r["status"] == "new"]
    tail = ""
    if new:
        tail += f"\n{len(new)} metric(s) not in the baseline, so not gated ({', '.join(new)}): add them with --update."
    if improved:
        tail += f"\n{len(improved)} metric(s) improved beyond tolerance: refresh the baseline with --update."
    if bad:
        tail += f"\nFAILED: {len(bad)} metric(s) regressed or missing."
    else:
        tail += f"\nOK: {len(report) - len(new)} metrics within tolerance of the baseline."
    return (1 if bad else 0), table + tail
