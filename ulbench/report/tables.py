"""Tables from result rows (pandas): the Table-6 layout with the paper's numbers beside ours."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from ulbench.compare import FAILED_MARK, format_value
from ulbench.config import seed_group
from ulbench.metrics.features import FRECHET_PREFIX, metric_label
from ulbench.report.significance import Estimate, direction, paper_direction, verdict

MAIN_METRICS = ("bpp", "bpp_ul_bound", "bpp_entropy", "bits_per_latent_dim", "psnr", "ssim", "lpips", "rfid",
                "gfid", "rfvd", "fvd", "fvd_copy_last", "train_flops")
FRECHET = ("rfid", "gfid", "rfvd", "fvd", "fvd_copy_last")
SHORT = {"bpp": "bpp", "psnr": "PSNR dB", "ssim": "SSIM", "lpips": "LPIPS", "rfid": "rFID", "gfid": "gFID",
         "train_flops": "train FLOPs", "kid": "KID", "bpp_entropy": "bpp (entropy)",
         "bpp_ul_bound": "bpp (UL bound)", "rfvd": "rFVD", "fvd": "FVD",
         "fvd_copy_last": "FVD copy-last", "bits_per_latent_dim": "bits/latent dim"}
ARROW = {"bpp": "↓", "psnr": "↑", "ssim": "↑", "lpips": "↓", "rfid": "↓", "gfid": "↓", "train_flops": "↓",
         "kid": "↓", "bpp_entropy": "↓",
         "bpp_ul_bound": "↓", "bits_per_latent_dim": "", "rfvd": "↓", "fvd": "↓", "fvd_copy_last": "↓"}
PAPER_PROVENANCE = "paper: ImageNet-512, Inception (Table 6)"


def ours_provenance(rows: list[dict[str, Any]]) -> str:
    """One-line provenance of our columns: data, split, scale, detector (proxy flagged), n."""
    fid = next((r for r in rows if r["metric"] in FRECHET and r.get("status") == "ok"), None)
    base = next((r for r in rows if r.get("status") == "ok"), rows[0])
    p = base.get("provenance", {})
    det = "no detector"
    if fid:
        fp = fid["provenance"]
        det = f"detector {fp.get('detector')}" + (" [PROXY, not FID]" if fid.get("proxy") else "") + \
              f" sha256 {str(fp.get('detector_weights_sha256'))[:10]}"
    return (f"ours: {p.get('dataset')} {p.get('resolution')}px, scale {p.get('scale', '?')}, {det}, "
            f"eval n={p.get('num_images', p.get('n'))}")


def frechet_header(rows: list[dict[str, Any]], metric: str) -> str:
    """Name of an image Fréchet metric as its rows' detector makes it (metric_label): rFID only on FID's
    Inception, rFD-EffNet on EfficientNet-Lite0, "rFID [proxy]" on the proxy; else the short name."""
    if metric not in FRECHET_PREFIX:
        return SHORT.get(metric, metric)
    found = [(r["metric"], r["provenance"]) for r in rows if r["metric"] in (metric, "rfid", "gfid", "kid")
             and r.get("status", "ok") == "ok" and r.get("provenance", {}).get("detector")]
    own = [p for m, p in found if m == metric]
    return metric_label(metric, (own or [p for _, p in found] or [None])[0])


def wide(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Run × metric table in suite order; training seeds of one run (NAME@seedK) are one row: the mean over seeds
    (`m`), its per-image standard error (`m_se`), the seeds' standard error (`m_seed_se`) and the Estimate (`m_est`)."""
    groups: dict[str, dict[str, Any]] = {}
    for r in rows:
        extra = r.get("extra", {})
        group = extra.get("seed_group") or seed_group(r["system"])[0]
        rec = groups.setdefault(group, {"run": group, "label": extra.get("run_label", group),
                                        "kind": extra.get("system_kind", ""), "paper": extra.get("paper", {}),
                                        "values": {}, "seeds": set()})
        rec["seeds"].add(r["system"])
        v = r["value"]
        status = r.get("status", "ok")
        if status == "failed" or (status == "ok" and v is not None and not math.isfinite(float(v))):
            rec["failed"] = rec.get("failed", set()) | {r["metric"]}  # attempted, not a number: never "–"
        elif v is not None and status == "ok":
            rec["values"].setdefault(r["metric"], []).append((float(v), r.get("stderr")))
    recs = []
    for rec in groups.values():
        out = {k: rec[k] for k in ("run", "label", "kind", "paper")}
        out["num_seeds"] = len(rec["seeds"])
        for m in rec.get("failed", ()):
            out[m + "_failed"] = True
        for m, vs in rec["values"].items():
            est = Estimate(tuple(v for v, _ in vs), tuple(s for _, s in vs))
            out[m], out[m + "_se"], out[m + "_seed_se"], out[m + "_est"] = est.mean, est.image_se, est.seed_se, est
        recs.append(out)
    return pd.DataFrame(recs).set_index("run")


def _cell(v: Any, se: Any, seed_se: Any, seeds: int) -> str:
    if v is None or pd.isna(v):
        return "–"
    cell = format_value(v, se if se is not None and not pd.isna(se) else None)
    return cell + (f" [seeds ± {seed_se:.2g}, N={seeds}]" if seeds > 1 and seed_se is not None
                   and not pd.isna(seed_se) else "")


def _fmt_flops(v: float | None) -> str:
    return "–" if v is None or pd.isna(v) else f"{v:.3g}"


def main_table(rows: list[dict[str, Any]], with_paper: bool) -> pd.DataFrame:
    """Formatted table: our metrics ± stderr, and the paper's bpp / rFID / gFID beside them."""
    df = wide(rows)
    proxy = any(r.get("proxy") for r in rows if r["metric"] in FRECHET)
    out = pd.DataFrame(index=df.index)
    shared = df["label"].duplicated(keep=False)  # a sweep's runs share one label: name each point's run too
    out["system"] = [f"{lbl} [{run}]" if dup else lbl for lbl, run, dup in zip(df["label"], df.index, shared)]
    for m in MAIN_METRICS:
        if m + "_failed" in df and m not in df:
            df[m] = None  # only failed rows: the column shows "failed" where they are
        if m not in df:
            continue
        if m == "bpp_ul_bound" and (df[m].isna() | (df[m] == df["bpp"])).all():
            continue  # every row's bpp already is its UL bound (all-UL tables): no second copy
        if m in FRECHET_PREFIX:
            name = frechet_header(rows, m) + " " + ARROW[m]
        else:
            name = SHORT[m] + (" [proxy]" if proxy and m in FRECHET else "") + " " + ARROW[m]
        if m == "train_flops":
            out[name] = [_fmt_flops(v) for v in df[m]]
        else:
            failed = df[m + "_failed"] if m + "_failed" in df else [False] * len(df)
            out[name] = [FAILED_MARK if (f is True and (v is None or pd.isna(v))) else _cell(v, se, sse, n)
                         for v, se, sse, n, f in
                         zip(df[m], df.get(m + "_se", [None] * len(df)), df.get(m + "_seed_se", [None] * len(df)),
                             df["num_seeds"], failed)]
    if with_paper:
        for m in ("bpp", "rfid", "gfid"):
            out[f"paper {SHORT[m]}"] = [p.get(m, "–") if isinstance(p, dict) else "–" for p in df["paper"]]
    return out


def orderings(rows: list[dict[str, Any]], baseline: str = "baseline") -> pd.DataFrame | None:
    """For each ablation row: does bpp / rFID / gFID move against the baseline in the paper's direction, and is
    the move resolved (significance.ORDERING_RULE)?"""
    df = wide(rows)
    if baseline not in df.index:
        return None
    base, base_paper = df.loc[baseline], df.loc[baseline, "paper"] or {}
    heads = {m: SHORT[m] if frechet_header(rows, m) == SHORT[m] or m == "bpp"
             else f"{SHORT[m]} (paper) vs {frechet_header(rows, m)} (ours)" for m in ("bpp", "rfid", "gfid")}
    out = []
    for run, rec in df.iterrows():
        if run == baseline or not rec["paper"]:
            continue
        row = {"row": rec["label"], "seeds": f"{rec['num_seeds']} vs {base['num_seeds']}"}
        for m in ("bpp", "rfid", "gfid"):
            paper_v, pb = rec["paper"].get(m), base_paper.get(m)
            ours, ob = rec.get(m + "_est"), base.get(m + "_est")
            if paper_v is None or pb is None or not isinstance(ours, Estimate) or not isinstance(ob, Estimate):
                row[heads[m]] = "n/a"
                continue
            row[heads[m]] = verdict(paper_direction(paper_v, pb), *direction(ours, ob))
        out.append(row)
    return pd.DataFrame(out) if out else None


def provenance_block(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The provenance of every number: one line per (run, metric) with the key fields."""
    keys = ("detector", "detector_weights_sha256", "resize", "dataset", "split", "resolution", "n", "seed",
            "decode_steps", "world_size", "config_hash", "git_sha", "ulbench_version", "wall_time_s")
    recs = []
    for r in rows:
        p = r.get("provenance", {})
        rec = {"run": r["system"], "metric": r["metric"], "status": r.get("status", "ok")}
        for k in keys:
            v = p.get(k)
            rec[k] = (str(v)[:12] if k.endswith("sha256") and v else
                      json.dumps(v) if isinstance(v, (dict, list)) else v)
        recs.append(rec)
    return pd.DataFrame(recs)
