"""Video path speeds on this machine: decode (worker vs in-process), embedded build, video-proxy and I3D port.

Run: python benchmarks/bench_video.py  (prints seconds and ratios; no network, no weights needed).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def timed(fn, repeat: int = 1) -> float:
    """Best-of-`repeat` wall time of fn() in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    from ulbench.data.video import embedded_videos, read_clip, write_mp4
    from ulbench.metrics.fvd import InceptionI3d, VideoProxyDetector

    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_mp4(Path(tmp) / "clip.mp4", rng.integers(0, 256, (64, 256, 340, 3), dtype=np.uint8))
        read_clip(path)  # start the worker
        n = 20
        worker = timed(lambda: [read_clip(path, index=i) for i in range(n)], 2) / n
        local = timed(lambda: [read_clip(path, index=i, timeout_s=0) for i in range(n)], 2) / n
        print(f"decode 16 frames of 340x256 -> 64 px: worker {worker * 1e3:.1f} ms/clip, in-process "
              f"{local * 1e3:.1f} ms/clip (guard overhead x{worker / local:.2f})")
    t_build = timed(lambda: embedded_videos("eval"))
    print(f"embedded eval clips (55 x 16 x 32 x 32), first build in this process: {t_build:.1f} s")
    clips = embedded_videos("eval").videos
    det = VideoProxyDetector()
    t_proxy = timed(lambda: det.features(clips), 2)
    print(f"video-proxy features: {t_proxy / len(clips) * 1e3:.1f} ms/clip")
    model = InceptionI3d().eval()
    with torch.no_grad():
        t_i3d = timed(lambda: model(torch.zeros(1, 3, 16, 224, 224)))
    print(f"InceptionI3d port (random weights), one 16x224x224 clip: {t_i3d:.2f} s")


if __name__ == "__main__":
    main()
