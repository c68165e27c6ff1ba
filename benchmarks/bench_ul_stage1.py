"""Benchmark UL stage 1 training outcomes: a c_lf / bias_b bitrate sweep and full runs (UL-SPEC §5).

    python benchmarks/bench_ul_stage1.py --sweep              # short runs over c_lf and bias_b
    python benchmarks/bench_ul_stage1.py --full-run 1000      # one full tiny run (bpp, PSNR at 1000 steps)

Step time, samples/s and FLOP utilisation of every model are `benchmarks/bench_engine.py`.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ul_models.config import ULConfig
from ul_models.train import train_stage1


def sweep(base: ULConfig, out_dir: Path, c_lf_values: list[float], bias_values: list[float]) -> list[dict]:
    """Short stage-1 runs over c_lf (at base bias_b) and bias_b (at base c_lf): bpp must rise with both."""
    grid = [(c, base.bias_b) for c in c_lf_values] + [(base.c_lf, b) for b in bias_values]
    rows, seen = [], set()
    for c_lf, bias_b in grid:
        if (c_lf, bias_b) in seen:
            continue
        seen.add((c_lf, bias_b))
        cfg = dataclasses.replace(base, c_lf=c_lf, bias_b=bias_b)
        run_dir = out_dir / f"clf{c_lf:g}_b{bias_b:g}"
        summary = train_stage1(
            cfg, run_dir, resume=(run_dir / "checkpoint.safetensors").exists(), progress=False
        )
        rows.append({"c_lf": c_lf, "bias_b": bias_b, **summary})
        print(
            f"  c_lf={c_lf:<6g} b={bias_b:<5g} bpp={summary['bits_per_pixel']:.4f}"
            f"±{summary['bits_per_pixel_stderr']:.4f}  PSNR={summary['psnr_db']:.2f} dB  "
            f"({summary['wall_time_s']:.0f} s)",
            flush=True,
        )
    return rows


def print_sweep(rows: list[dict], base: ULConfig) -> None:
    """Markdown tables of bpp / PSNR along each axis, with the monotonicity verdict."""
    for axis, fixed, fixed_value in (("c_lf", "bias_b", base.bias_b), ("bias_b", "c_lf", base.c_lf)):
        sel = sorted((r for r in rows if r[fixed] == fixed_value), key=lambda r: r[axis])
        print(f"\n| {axis} ({fixed}={fixed_value:g}) | bpp | ± | PSNR dB | bits/latent dim |")
        print("|---|---|---|---|---|")
        for r in sel:
            print(
                f"| {r[axis]:g} | {r['bits_per_pixel']:.4f} | {r['bits_per_pixel_stderr']:.4f} | "
                f"{r['psnr_db']:.2f} | {r['bits_per_latent_dim']:.3f} |"
            )
        bpp = [r["bits_per_pixel"] for r in sel]
        print(f"bpp monotonically rising with {axis}: {all(a < b for a, b in itertools.pairwise(bpp))}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", default="tiny")
    p.add_argument("--threads", type=int, default=2, help="torch threads (the machine has 2 cores)")
    p.add_argument("--steps", type=int, default=20, help="timed training steps")
    p.add_argument("--set", nargs="*", default=[], help="ULConfig overrides key=value")
    p.add_argument("--sweep", action="store_true", help="train short runs over c_lf and bias_b")
    p.add_argument("--sweep-steps", type=int, default=300)
    p.add_argument("--sweep-batch-size", type=int, default=32)
    p.add_argument("--c-lf-values", default="3,10,30,100")
    p.add_argument("--bias-values", default="-2,0,2,4")
    p.add_argument("--full-run", type=int, default=0, help="also train one run of this many steps")
    p.add_argument("--out-dir", default="runs/bench_ul_stage1")
    p.add_argument("--json", default=None, help="write all results to this JSON file")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    cfg = ULConfig.preset(args.scale, num_threads=args.threads).replace_from_strings(args.set)
    out_dir = Path(args.out_dir)
    results: dict = {"config_hash": cfg.config_hash(), "threads": args.threads, "batch_size": cfg.batch_size}

    if args.sweep:
        base = dataclasses.replace(
            cfg,
            steps=args.sweep_steps,
            batch_size=args.sweep_batch_size,
            eval_every=args.sweep_steps,
            checkpoint_every=args.sweep_steps,
        )
        print(
            f"\nSweep: {args.sweep_steps} steps, batch {args.sweep_batch_size}, eval on {base.eval_images} "
            f"eval-split images ({base.eval_draws} draws each, {base.decode_steps} DDIM steps)"
        )
        rows = sweep(
            base,
            out_dir / "sweep",
            [float(v) for v in args.c_lf_values.split(",")],
            [float(v) for v in args.bias_values.split(",")],
        )
        print_sweep(rows, base)
        results["sweep"] = rows
    if args.full_run:
        full = dataclasses.replace(cfg, steps=args.full_run)
        run_dir = out_dir / f"full{args.full_run}"
        summary = train_stage1(
            full, run_dir, resume=(run_dir / "checkpoint.safetensors").exists(), progress=False
        )
        print(
            f"\nFull run {args.full_run} steps: {summary['bits_per_pixel']:.4f} bpp, "
            f"{summary['psnr_db']:.2f} dB, "
            f"{summary['wall_time_s']:.0f} s"
        )
        results["full_run"] = summary
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
