"""Metric regression gate: compare result rows with a committed baseline under per-metric tolerances."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ulbench.compare import latest_rows
from ulbench.markdown import markdown_table
from ulbench.results import COMPARABLE_FIELDS, atomic_write_text, read_rows, strict_json

# metric -> (kind, tolerance): "abs" in the metric's unit or "rel" fraction of the baseline value
TOLERANCES = {"psnr": ("abs", 0.5), "ssim": ("abs", 0.02), "lpips": ("abs", 0.02), "bpp": ("rel", 0.15),
              "bpp_entropy": ("rel", 0.05), "bpp_ul_bound": ("rel", 0.15),
              "rfid": ("rel", 0.25), "gfid": ("rel", 0.25), "kid": ("abs", 0.005),
              "train_flops": ("rel", 1e-6), "sample_flops": ("rel", 1e-6)}
FLOORS = {"rfid": 1e-3, "gfid": 1e-3, "kid": 1e-4}  # absolute slack for distances near 0


# metric -> (lowest, highest) value a working system can give; outside it a value is "implausible" (exit 1), never an
# "improved" one: a rate of 0 bits encodes nothing (a collapse), a Fréchet distance or LPIPS is never negative,
# SSIM lies in [-1, 1]. KID's unbiased estimate may be negative; metrics not listed only need to be finite.
PLAUSIBLE = {"bpp": (0.0, None), "bpp_entropy": (0.0, None), "bpp_ul_bound": (0.0, None),
             "bits_per_latent_dim": (0.0, None), "psnr": (0.0, None), "ssim": (-1.0, 1.0), "lpips": (0.0, None),
             "rfid": (0.0, None), "gfid": (0.0, None), "rfvd": (0.0, None), "fvd": (0.0, None),
             "train_flops": (0.0, None), "sample_flops": (0.0, None)}
OPEN_LOW = {"bpp", "bpp_entropy", "bpp_ul_bound", "bits_per_latent_dim", "psnr"}  # 0 itself is a collapse


def _key(row: dict[str, Any]) -> str:
    return f"{row['system']}/{row['metric']}"


def _protocol(row: dict[str, Any]) -> dict[str, Any]:
    return {f: row.get("provenance", {}).get(f) for f in COMPARABLE_FIELDS}


def _number(row: dict[str, Any]) -> float | None:
    """The row's value when it is an ok, finite number (old files may hold Infinity/NaN or "inf"), else None."""
    if row.get("status", "ok") != "ok" or row.get("value") is None:
        return None
    try:
        v = float(row["value"])
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def implausible(metric: str, value: float) -> str | None:
    """Why `value` cannot be a real measurement of `metric` (PLAUSIBLE), or None."""
    low, high = PLAUSIBLE.get(metric, (None, None))
    if low is not None and (value < low or (value == low and metric in OPEN_LOW)):
        return f"{metric} = {value:g} is outside the plausible range ({'>' if metric in OPEN_LOW else '≥'} {low:g})"
    if high is not None and value > high:
        return f"{metric} = {value:g} is outside the plausible range (≤ {high:g})"
    return None


def make_baseline(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Baseline document: value, direction, tolerance and protocol of every ok, finite, plausible row of the
    latest run per system/metric."""
    out = {}
    for r in latest_rows(rows):
        value = _number(r)
        if value is None or implausible(r["metric"], value):
            continue
        kind, tol = TOLERANCES.get(r["metric"], ("rel", 0.1))
        out[_key(r)] = {"value": value, "higher_is_better": bool(r["higher_is_better"]),
                        "tolerance": tol, "tolerance_kind": kind, "protocol": _protocol(r)}
    return {"format": "ulbench-baseline/1", "metrics": out}


def check(rows: list[dict[str, Any]], baseline: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Per metric of the latest run (by order in the files: run identity, never a timestamp): ok / regressed /
    improved (beyond tolerance: needs --update) / implausible / failed / missing; refusals for protocol
    differences."""
    latest = {_key(r): r for r in latest_rows(rows)}
    report, refusals = [], []
    for key, ref in sorted(baseline["metrics"].items()):
        if not isinstance(ref.get("value"), (int, float)) or not math.isfinite(ref["value"]):
            report.append({"metric": key, "baseline": ref.get("value"), "current": None, "status": "ungated",
                           "why": "the baseline holds no finite value (an old file): refresh it with --update"})
            continue
        row = latest.get(key)
        if row is None:
            report.append({"metric": key, "baseline": ref["value"], "current": None, "status": "missing"})
            continue
        value = _number(row)
        if value is None:
            why = row.get("reason") or f"value {row.get('value')!r}"
            report.append({"metric": key, "baseline": ref["value"], "current": None,
                           "status": "failed", "why": f"{row.get('status', 'ok')}: {why}"})
            continue
        proto = _protocol(row)
        diffs = [f"{f}: {ref['protocol'].get(f)!r} vs {proto.get(f)!r}" for f in COMPARABLE_FIELDS
                 if json.dumps(ref["protocol"].get(f), sort_keys=True) != json.dumps(proto.get(f), sort_keys=True)]
        if diffs:
            refusals.append(f"{key}: " + "; ".join(diffs))
            continue
        base = float(ref["value"])
        allowed = ref["tolerance"] * (abs(base) if ref["tolerance_kind"] == "rel" else 1.0)
        allowed = max(allowed, FLOORS.get(key.rsplit("/", 1)[-1], 0.0))
        delta = value - base
        entry = {"metric": key, "baseline": base, "current": value, "delta": delta, "allowed": allowed}
        bad = implausible(key.rsplit("/", 1)[-1], value)
        if bad:
            report.append({**entry, "status": "implausible", "why": bad})
            continue
        better = delta > 0 if ref["higher_is_better"] else delta < 0
        status = "ok" if abs(delta) <= allowed else ("improved" if better else "regressed")
        report.append({**entry, "status": status})
    current = {k: r for k, r in latest.items() if _number(r) is not None}
    report += [{"metric": key, "baseline": None, "current": _number(current[key]), "status": "new"}
               for key in sorted(set(current) - set(baseline["metrics"]))]
    return report, refusals


def run_check(paths: list[str], baseline_path: str, update: bool = False) -> tuple[int, str]:
    """Exit code and a Markdown table: 1 when anything regressed, failed, is missing, implausible or improved
    beyond tolerance (refresh with --update), or when the baseline is empty or matches nothing; 2 when refused."""
    import pandas as pd

    rows = read_rows(paths)
    path = Path(baseline_path)
    if update:
        doc = make_baseline(rows)
        if not doc["metrics"]:
            return 1, f"FAILED: no ok, finite result rows in {', '.join(paths)}: baseline {path} not written"
        atomic_write_text(path, strict_json(doc, indent=1, sort_keys=True))
        return 0, f"baseline written: {path} ({len(doc['metrics'])} metrics)"
    if not path.is_file():
        raise ValueError(f"baseline {path} not found; create it with "
                         f"`ulbench check RESULTS --baseline {path} --update`")
    try:
        baseline = json.loads(path.read_text())
        metrics = baseline["metrics"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"baseline {path} is not a ulbench baseline ({type(e).__name__}: {e}); expected "
                         f'{{"format": "ulbench-baseline/1", "metrics": {{...}}}}, written by --update') from e
    if not metrics:
        return 1, (f"FAILED: baseline {path} has no metrics, so it would pass anything; write it from a good run "
                   f"with `ulbench check RESULTS --baseline {path} --update`")
    report, refusals = check(rows, baseline)
    if refusals:
        return 2, ("refusing to check against a baseline with different provenance:\n  " + "\n  ".join(refusals)
                   + "\nre-run under the baseline's protocol, or refresh it with --update")
    table = markdown_table(pd.DataFrame(report), index=False)
    if all(r["status"] in ("missing", "new", "ungated") for r in report):
        return 1, (table + f"\nFAILED: none of the baseline's {len(metrics)} metrics is in the results "
                   f"({', '.join(paths)}): wrong results file or wrong baseline?")
    bad = [r for r in report if r["status"] in ("regressed", "missing", "failed", "implausible")]
    improved = [r["metric"] for r in report if r["status"] == "improved"]
    new = [r["metric"] for r in report if r["status"] == "new"]
    tail = ""
    ungated = [r["metric"] for r in report if r["status"] == "ungated"]
    if ungated:
        tail += (f"\n{len(ungated)} baseline metric(s) hold no finite value, so not gated ({', '.join(ungated)}): "
                 "refresh the baseline with --update.")
    if new:
        tail += f"\n{len(new)} metric(s) not in the baseline, so not gated ({', '.join(new)}): add them with --update."
    if improved:
        tail += (f"\nFAILED: {len(improved)} metric(s) improved beyond tolerance ({', '.join(improved)}): check that "
                 "the change is real, then refresh the baseline with --update.")
    if bad:
        tail += (f"\nFAILED: {len(bad)} metric(s) regressed, failed, implausible or missing "
                 f"({', '.join(r['metric'] for r in bad)}).")
    if not bad and not improved:
        tail += f"\nOK: {len(report) - len(new) - len(ungated)} metrics within tolerance of the baseline."
    return (1 if bad or improved else 0), table + tail
