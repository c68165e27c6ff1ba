"""Plots (seaborn): rate-distortion (bpp vs PSNR, bpp vs rFID) and cost-quality (gFID vs training FLOPs); the
Fréchet axes are named by their detector (rFD-EffNet, rFID, rFID [proxy])."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from ulbench.report.tables import frechet_header, wide  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _log_x_ticks(ax, values) -> None:
    """Labelled ticks on a log x axis even when the data span less than a decade (matplotlib then shows none)."""
    import numpy as np

    v = np.asarray([x for x in values if x and x > 0 and np.isfinite(x)], dtype=float)
    if len(v) and v.max() / v.min() < 10:
        ticks = np.geomspace(v.min(), v.max(), 4) if v.max() > v.min() else v[:1]
        ax.set_xticks(ticks, [f"{t:.2g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())


def rate_distortion(rows: list[dict[str, Any]], proxy: bool) -> bytes | None:
    """bpp against PSNR and rFID, one marker per run; JPEG points drawn as a reference line."""
    df = wide(rows).reset_index()
    if "bpp" not in df or "psnr" not in df or df["bpp"].isna().all():
        return None
    df["family"] = ["JPEG" if k == "jpeg" else lbl for k, lbl in zip(df["kind"], df["label"])]
    fig, axes = plt.subplots(1, 2 if "rfid" in df else 1, figsize=(10, 4), squeeze=False)
    sns.set_theme(style="whitegrid")
    jpeg = df[df["kind"] == "jpeg"].copy()
    # JPEG at its entropy-coded bits: a 32×32 file is mostly header, which a real codec would share across crops
    jpeg["rate"] = jpeg["bpp_entropy"].fillna(jpeg["bpp"]) if "bpp_entropy" in jpeg else jpeg["bpp"]
    jpeg = jpeg.sort_values("rate")
    other = df[df["kind"] != "jpeg"].copy()
    # learned spaces sit at their UL bound (UL-SPEC §3), comparable across spaces; else the space's own bits
    other["rate"] = other["bpp_ul_bound"].fillna(other["bpp"]) if "bpp_ul_bound" in other else other["bpp"]
    bound = other["bpp_ul_bound"].notna() if "bpp_ul_bound" in other else pd.Series(False, index=other.index)
    other["rate_seed_se"] = [_seed_se(r, "bpp_ul_bound" if b else "bpp") for (_, r), b in zip(other.iterrows(), bound)]
    labels = ("PSNR (dB) ↑", frechet_header(rows, "rfid") + " ↓")  # names the detector: rFD-EffNet, rFID
    for ax, metric, label in zip(axes[0], ("psnr", "rfid"), labels):
        if metric not in df:
            continue
        if len(jpeg):
            ax.plot(jpeg["rate"], jpeg[metric], "k--o", label="JPEG (entropy-coded bits)", alpha=0.6)
        for _, fam in other.groupby("family", sort=False):  # a sweep (one label, several runs) is a curve
            if len(fam) > 1:
                fam = fam.sort_values("rate")
                ax.plot(fam["rate"], fam[metric], "-", color="grey", alpha=0.4, lw=1)
        sns.scatterplot(data=other, x="rate", y=metric, hue="family", style="family", s=90, ax=ax)
        yerr = [_seed_se(r, metric) for _, r in other.iterrows()]  # training seeds' standard error (0: one seed)
        ax.errorbar(other["rate"], other[metric], xerr=other["rate_seed_se"], yerr=yerr, fmt="none",
                    ecolor="black", elinewidth=0.8, capsize=2, alpha=0.7)
        ax.set_xscale("log")
        shown = pd.concat([other, jpeg])
        _log_x_ticks(ax, shown.loc[pd.to_numeric(shown[metric], errors="coerce").abs() < float("inf"), "rate"])
        for lam, dims, bpp in capacity_lines(rows):
            ax.axvline(bpp, color="grey", ls=":", lw=1)
            ax.annotate(f"λ₀={lam:g} capacity\n({dims} dims, unit var.)", (bpp, 0.02), fontsize=6, color="grey",
                        xycoords=("data", "axes fraction"), rotation=90, ha="right", va="bottom")
        ax.set_xlabel("bits/pixel, log (UL bound where measured)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle("Rate-distortion")
    return _png(fig)


def _seed_se(rec: pd.Series, metric: str) -> float:
    """The standard error over training seeds of `metric` in one wide() record; 0 when not available."""
    v = rec.get(f"{metric}_seed_se")
    return 0.0 if v is None or pd.isna(v) else float(v)


def capacity_lines(rows: list[dict[str, Any]]) -> list[tuple[float, int, float]]:
    """(λ₀, latent dims, bpp) of the noisy channel's capacity at unit latent variance, ½·log2(1 + e^λ₀) bits per
    latent dimension (UL-SPEC §2), for each distinct (λ₀, dims) among the rows' bits/latent-dim rows."""
    out = set()
    for r in rows:
        e = r.get("extra", {})
        if r["metric"] == "bits_per_latent_dim" and "capacity_bits_per_dim_unit_var" in e:
            res = r.get("provenance", {}).get("resolution") or 0
            if res:
                cap = e["capacity_bits_per_dim_unit_var"] * e["latent_dims"] / res**2
                out.add((e["lambda0"], e["latent_dims"], cap))
    return sorted(out)[:4]


def cost_quality(rows: list[dict[str, Any]], proxy: bool) -> bytes | None:
    """gFID against cumulative training FLOPs (log axis): a curve per system where gFID was measured along
    training (`gfid_curve` rows, stage 1 included), else one point per run."""
    df = wide(rows).reset_index()
    curves = pd.DataFrame([{"label": r.get("extra", {}).get("run_label", r["system"]), "gfid": r["value"],
                            "train_flops": r["extra"]["train_macs"], "step": r["extra"]["base_steps"]}
                           for r in rows if r["metric"] == "gfid_curve" and r.get("status", "ok") == "ok"])
    if "gfid" not in df or "train_flops" not in df or df["gfid"].isna().all():
        return None
    df = df.dropna(subset=["gfid", "train_flops"])
    df = df[df["train_flops"] > 0]
    if not len(df) and not len(curves):
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    if len(curves):
        curves = curves.groupby(["label", "step"], as_index=False).mean(numeric_only=True)  # seeds: mean
        sns.lineplot(data=curves.sort_values("train_flops"), x="train_flops", y="gfid", hue="label", marker="o",
                     ax=ax, sort=False)
    else:
        sns.scatterplot(data=df, x="train_flops", y="gfid", hue="label", style="kind", s=110, ax=ax)
    ax.set_xscale("log")
    _log_x_ticks(ax, pd.concat([df["train_flops"], curves["train_flops"]]) if len(curves) else df["train_flops"])
    ax.set_xlabel("training FLOPs, cumulative (fvcore: 1 MAC = 1 FLOP), log")
    ax.set_ylabel(frechet_header(rows, "gfid") + " ↓")
    ax.set_title("Cost-quality" + (" along training" if len(curves) else ""))
    ax.legend(fontsize=7)
    return _png(fig)


def to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Numeric wide frame (for tests and notebooks)."""
    return wide(rows)
