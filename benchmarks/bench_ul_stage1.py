"""Benchmark UL stage 1: step throughput, FLOP utilisation, and a c_lf / bias_b bitrate sweep (UL-SPEC §5).

    python benchmarks/bench_ul_stage1.py                      # throughput + utilisation at the tiny preset
    python benchmarks/bench_ul_stage1.py --sweep              # + short runs over c_lf and bias_b
    python benchmarks/bench_ul_stage1.py --full-run 1000      # + one full tiny run (bpp, PSNR at 1000 steps)

FLOPs come from torch.utils.flop_counter.FlopCounterMode: a multiply-add is 2 FLOPs (fvcore counts 1).
Step FLOPs = 3 × forward FLOPs (forward + backward ≈ 2× forward); utilisation = step FLOP/s over a measured
large fp32 matmul's FLOP/s on the same threads.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ul_models.config import ULConfig
from ul_models.model import build_stage1
from ul_models.nets import count_params
from ul_models.train import batch_indices, train_stage1, train_step


def matmul_flops_per_s(n: int = 2048, repeats: int = 8) -> float:
    """Best-of-`repeats` FLOP/s of an n×n fp32 matmul (2·n³ FLOPs)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def forward_flops(cfg: ULConfig) -> dict[str, float]:
    """Forward FLOPs per batch of the stage-1 loss, total and per component (FlopCounterMode: 2 per MAC)."""
    model = build_stage1(cfg)
    x = torch.rand(cfg.batch_size, 3, cfg.resolution, cfg.resolution) * 2 - 1
    lam = torch.zeros(cfg.batch_size)
    out = {}
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            model.losses(x, torch.Generator().manual_seed(0))
        out["total"] = fc.get_total_flops()
        z_clean, _ = model.encode_clean(x)
        parts = {
            "encoder": lambda: model.encoder(x),
            "prior": lambda: model.prior(z_clean, lam),
            "decoder": lambda: model.decoder(x, lam, model.decoder_cond(z_clean, None)),
        }
        for name, fn in parts.items():
            with FlopCounterMode(display=False) as fc:
                fn()
            out[name] = fc.get_total_flops()
    return out


def throughput(cfg: ULConfig, steps: int, warmup: int = 3) -> dict[str, float]:
    """Seconds per training step (AdamW, clip, EMA) on real embedded batches, channels_last."""
    from ulbench.data import load_dataset

    data = load_dataset(cfg.data, split="train", resolution=cfg.resolution)
    torch.manual_seed(0)
    model = build_stage1(cfg).to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    times = []
    for step in range(warmup + steps):
        x, _ = data.get(batch_indices(step, cfg.batch_size, len(data), cfg.seed))
        t0 = time.perf_counter()
        train_step(model, ema, opt, x, step, cfg)
        times.append(time.perf_counter() - t0)
    times = sorted(times[warmup:])
    return {
        "sec_per_step_median": times[len(times) // 2],
        "sec_per_step_mean": sum(times) / len(times),
        "params": {k: count_params(getattr(model, k)) for k in ("encoder", "prior", "decoder")},
    }


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
    p.add_argument("--skip-speed", action="store_true", help="skip the throughput / utilisation measurement")
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

    if not args.skip_speed:
        flops = forward_flops(cfg)
        speed = throughput(cfg, args.steps)
        peak = matmul_flops_per_s()
        step_flops = 3 * flops["total"]
        achieved = step_flops / speed["sec_per_step_median"]
        results.update(
            forward_flops_per_batch=flops,
            step_flops=step_flops,
            matmul_flops_per_s=peak,
            achieved_flops_per_s=achieved,
            utilisation=achieved / peak,
            **speed,
        )
        print(
            f"UL stage 1 [{args.scale}] batch {cfg.batch_size}, {args.threads} threads, "
            f"params {speed['params']}"
        )
        print(
            f"  forward GFLOP/batch (2 per MAC): total {flops['total'] / 1e9:.2f} = "
            f"encoder {flops['encoder'] / 1e9:.2f}"
            f" + prior {flops['prior'] / 1e9:.2f} + decoder {flops['decoder'] / 1e9:.2f} (+ elementwise)"
        )
        print(
            f"  {speed['sec_per_step_median']:.3f} s/step (median of {args.steps}); 1000 steps ≈ "
            f"{1000 * speed['sec_per_step_median']:.0f} s"
        )
        print(
            f"  step = 3 × forward = {step_flops / 1e9:.1f} GFLOP → {achieved / 1e9:.1f} GFLOP/s; "
            f"fp32 matmul 2048² {peak / 1e9:.1f} GFLOP/s; utilisation {100 * achieved / peak:.1f}%"
        )

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
