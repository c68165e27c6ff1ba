"""FD-EffNet feature throughput: the detector as shipped (channels_last) against the same network contiguous.

Same weights, same images, same micro-batches; prints ms per image for both memory formats, their ratio and the
largest feature difference (float rounding only). Compare timings only within one sitting on one machine.

    python benchmarks/bench_effnet.py --n 256 --device cpu
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _time(fn, reps: int) -> tuple[float, np.ndarray]:
    """Best wall time of `fn` (which returns features on the CPU, so the device is synchronised) over reps."""
    fn()  # warm-up
    best, out = float("inf"), None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    from ulbench.metrics.effnet import EffNetDetector, effnet_preprocess

    det = EffNetDetector().to(args.device)
    x = torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    contiguous = copy.deepcopy(det.model).to(memory_format=torch.contiguous_format)

    @torch.no_grad()
    def plain() -> np.ndarray:
        xd = x.to(det.device)
        feats = torch.cat([contiguous.features(effnet_preprocess(c))[:n] for c, n in det._chunks(xd)])
        return feats.double().cpu().numpy()

    t_cl, f_cl = _time(lambda: det.features(x), args.reps)
    t_plain, f_plain = _time(plain, args.reps)
    diff = float(np.abs(f_cl - f_plain).max())
    print(f"device {args.device}, {args.n} images 32 px -> 224 px, micro-batch {det.micro_batch}, threads "
          f"{torch.get_num_threads()}")
    print(f"contiguous     {1000 * t_plain / args.n:7.2f} ms/image")
    print(f"channels_last  {1000 * t_cl / args.n:7.2f} ms/image  (shipped)")
    print(f"speed-up {t_plain / t_cl:.2f}x, max |feature diff| {diff:.2e}")


if __name__ == "__main__":
    main()
