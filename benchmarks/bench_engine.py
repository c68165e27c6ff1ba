"""Engine benchmark (issue 11): step time, samples/s and model FLOP utilisation of every model on the device.

    python benchmarks/bench_engine.py                                   # CPU, tiny and small, fp32
    python benchmarks/bench_engine.py --device cuda --precision bf16 --scales tiny,small,paper --batch-paper 32

Per model (UL stage 1 training step, base-model training step, UL decoder sampling, detector features) and scale:
seconds per call (median of --repeats after warm-up), samples/s, counted FLOPs (fvcore MACs × 2; a training step is
3 × forward) and MFU = achieved FLOP/s ÷ the device's peak measured in the same run with a large matmul in the same
precision. Compare numbers only within one run on one machine (machines of one kind differ up to 2×).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ul_models.base import BaseConfig, BaseObjective  # noqa: E402
from ul_models.config import ULConfig  # noqa: E402
from ul_models.train import Stage1Objective  # noqa: E402
from ul_models.training.loop import Loop, LoopConfig  # noqa: E402
from ulbench.costs import _Call, ul_model_components  # noqa: E402
from ulbench.device import Execution, autocast  # noqa: E402
from ulbench.flops_report import BASE_CHANNELS  # noqa: E402
from ulbench.metrics.flops import count_forward_macs  # noqa: E402


def sync(device: torch.device) -> None:
    """Wait for queued device work (CUDA is asynchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds per call after `warmup` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def peak_flops(device: torch.device, precision: str, n: int) -> float:
    """Measured peak: best FLOP/s of an n×n matmul (2·n³ FLOPs) in the compute dtype on the device."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.bfloat16
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = min(timed(lambda: a @ b, device, 2, 1) for _ in range(5))
    return 2 * n**3 / best


def train_row(name: str, objective: Any, batch: dict[str, torch.Tensor], macs_per_sample: float,
              execution: Execution, warmup: int, repeats: int) -> dict[str, Any]:
    """One loop step (forward, backward, clip, AdamW, EMA, the guard's sync) on a fixed batch."""
    b = len(next(iter(batch.values())))
    loop = Loop(objective, LoopConfig(steps=10**6, batch_size=b, channels_last=True), execution)
    state = {"step": 0}

    def step():
        loop.step(state["step"], batch)
        state["step"] += 1

    s = timed(step, loop.device, warmup, repeats)
    mem = torch.cuda.max_memory_allocated(loop.device) / 2**30 if loop.device.type == "cuda" else None
    return {"model": name, "batch": b, "s_per_call": s, "samples_per_s": b / s,
            "flops_per_call": 2 * 3 * macs_per_sample * b, "max_mem_gib": mem}


def sample_row(model: Any, cfg: ULConfig, batch: int, steps: int, execution: Execution, warmup: int,
               repeats: int) -> dict[str, Any]:
    """The UL decoder sampler: `steps` decoder evaluations per image from z₀ (per-sample seeds)."""
    device = execution.torch_device
    model = model.to(device).eval()
    f, c, d = model.downsample_factor, model.latent_channels, cfg.resolution
    z0 = torch.randn(batch, c, d // f, d // f, device=device)
    seeds = torch.arange(batch)
    macs = count_forward_macs(*ul_model_components(model.cpu(), cfg)["decoder"])
    model.to(device)

    def run():
        with torch.no_grad(), autocast(device, execution.precision):
            model.decode(z0, None, seeds, steps, micro_batch=batch)

    s = timed(run, device, warmup, repeats)
    return {"model": f"decoder sampling ({steps} steps)", "batch": batch, "s_per_call": s,
            "samples_per_s": batch / s, "flops_per_call": 2 * macs * steps * batch, "max_mem_gib": None}


class _Features(torch.nn.Module):
    """A detector's forward as a module, for fvcore's tracer."""

    def __init__(self, detector: Any):
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.detector.forward(x)


def detector_row(name: str, resolution: int, batch: int, execution: Execution, warmup: int,
                 repeats: int) -> dict[str, Any]:
    """Feature extraction of uint8 images at `resolution` (the detector resizes to its own input)."""
    from ulbench.metrics.features import build_detector

    macs = count_forward_macs(_Features(build_detector(name)), (torch.zeros(1, 3, resolution, resolution,
                                                                           dtype=torch.uint8),))
    det = build_detector(name, device=execution.torch_device, precision=execution.precision)
    x = torch.randint(0, 256, (batch, 3, resolution, resolution), dtype=torch.uint8)
    s = timed(lambda: det.features(x), execution.torch_device, warmup, repeats)
    return {"model": f"detector {name} @{resolution}px", "batch": batch, "s_per_call": s,
            "samples_per_s": batch / s, "flops_per_call": 2 * macs * batch, "max_mem_gib": None}


def scale_rows(scale: str, batch: int | None, execution: Execution, warmup: int, repeats: int,
               detectors: list[str]) -> list[dict[str, Any]]:
    """Every model of one preset."""
    cfg = ULConfig.preset(scale, **({"batch_size": batch} if batch else {}))
    b, d = cfg.batch_size, cfg.resolution
    ul = Stage1Objective(cfg)
    torch.manual_seed(0)
    model = ul.build()
    ul_macs = sum(count_forward_macs(m, inp) for m, inp in ul_model_components(model, cfg).values())
    x = torch.randint(0, 256, (b, 3, d, d), dtype=torch.uint8)
    rows = [train_row("UL stage 1 train step", ul, {"x": x}, ul_macs, execution, warmup, repeats)]
    latent = (cfg.latent_channels, d // cfg.downsample_factor, d // cfg.downsample_factor)
    base_cfg = BaseConfig(space="ul", channels=BASE_CHANNELS[scale], resolution=d)
    base = BaseObjective(base_cfg, latent, 10, float(cfg.lambda0))
    base_macs = count_forward_macs(_Call(base.build(), with_labels=True),
                                   (torch.zeros(1, *latent), torch.zeros(1), torch.zeros(1, dtype=torch.long)))
    batch_base = {"z": torch.randn(b, *latent), "label": torch.randint(0, 10, (b,))}
    rows.append(train_row("base train step (UL latents)", base, batch_base, base_macs, execution, warmup, repeats))
    rows.append(sample_row(model, cfg, min(b, 16), cfg.decode_steps if scale == "tiny" else 8, execution, warmup,
                           repeats))
    for name in detectors:
        rows.append(detector_row(name, d, min(b, 32), execution, warmup, repeats))
    for r in rows:
        r["scale"] = scale
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--scales", default="tiny,small")
    p.add_argument("--batch-tiny", type=int, default=None)
    p.add_argument("--batch-small", type=int, default=8, help="CPU-friendly default; the preset's on a GPU: 0")
    p.add_argument("--batch-paper", type=int, default=8)
    p.add_argument("--detectors", default="proxy", help="comma list: proxy, inception-v3-compat (needs weights)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    execution = Execution(device=args.device, precision=args.precision)
    device = execution.torch_device
    peak = peak_flops(device, args.precision, 8192 if device.type == "cuda" else 2048)
    print(f"device {execution.provenance()['device']}, precision {args.precision}, threads {args.threads}; "
          f"measured peak (matmul) {peak / 1e12:.3f} TFLOP/s")
    rows = []
    for scale in args.scales.split(","):
        batch = getattr(args, f"batch_{scale}") or None
        rows += scale_rows(scale, batch, execution, args.warmup, args.repeats,
                           [d for d in args.detectors.split(",") if d])
    print("\n| scale | model | batch | s/call | samples/s | GFLOP/call | TFLOP/s | MFU | max mem GiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        r["flops_per_s"] = r["flops_per_call"] / r["s_per_call"]
        r["mfu"] = r["flops_per_s"] / peak
        mem = f"{r['max_mem_gib']:.1f}" if r["max_mem_gib"] is not None else "-"
        print(f"| {r['scale']} | {r['model']} | {r['batch']} | {r['s_per_call']:.4f} | {r['samples_per_s']:.1f} | "
              f"{r['flops_per_call'] / 1e9:.2f} | {r['flops_per_s'] / 1e12:.4f} | {100 * r['mfu']:.1f}% | {mem} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"peak_flops_per_s": peak, "execution": execution.provenance(),
                                               "rows": rows}, indent=1, default=str))


if __name__ == "__main__":
    main()
