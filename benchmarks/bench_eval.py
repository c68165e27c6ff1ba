"""One-pass reconstruction eval vs the peers run separately (issue 2 benchmark; prints ratios).

Same N images, same Inception weights (kaiming re-init of torch-fidelity's architecture, as the tests use:
no real weights offline; pass --weights for the real file), LPIPS with the same random trunk on both sides.
  peer:    torch-fidelity calculate_metrics(fid, kid) on two PNG folders + skimage PSNR/SSIM loop + lpips loop
  ulbench: eval_space(rfid, kid, psnr, ssim, lpips) cold (no feature cache) and warm (real features cached)
Also feature throughput: ulbench InceptionDetector vs torch-fidelity on the same tensors (identical features).

    python benchmarks/bench_eval.py --n 200
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
warnings.filterwarnings("ignore")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--weights", default=None, help="Inception weights (default: a kaiming re-init file)")
    args = ap.parse_args()

    import lpips
    import torch_fidelity
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from tests.conftest import kaiming_inception_state, write_pngs
    from ulbench.data.base import Subset
    from ulbench.data.embedded import embedded_photos
    from ulbench.evaluation import eval_space
    from ulbench.metrics.features import InceptionDetector
    from ulbench.registry import SPACES

    tmp = Path(tempfile.mkdtemp(prefix="ulbench-bench-"))
    os.environ["ULBENCH_CACHE"] = str(tmp / "cache")
    weights = args.weights
    if weights is None:
        weights = str(tmp / "weights-inception-2015-12-05-6726825d.pth")
        torch.save(kaiming_inception_state(), weights)
    ds = Subset(embedded_photos("eval"), args.n)
    x, _ = ds.get(np.arange(len(ds)))
    space = SPACES.build("jpeg-q30")
    xhat = space.reconstruct(x, torch.arange(len(x))).x_hat
    det = InceptionDetector(weights)
    print(f"N={len(x)} images 32x32, torch threads={torch.get_num_threads()}")

    # features: identical and throughput
    t = time.perf_counter()
    ours = np.concatenate([det.features(x[i:i + 64]) for i in range(0, len(x), 64)])
    t_ours = time.perf_counter() - t
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    peer_model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=weights)
    t = time.perf_counter()
    with torch.no_grad():
        peer = torch.cat([peer_model(x[i:i + 64])[0] for i in range(0, len(x), 64)]).double().numpy()
    t_peer = time.perf_counter() - t
    print(f"features: ulbench {len(x) / t_ours:.1f} img/s, torch-fidelity {len(x) / t_peer:.1f} img/s, "
          f"ratio {t_peer / t_ours:.2f}x, max |diff| {np.abs(ours - peer).max():.2e}")

    # peers, separately
    a, b = write_pngs(tmp / "orig", x), write_pngs(tmp / "recon", xhat)
    t = time.perf_counter()
    tf = torch_fidelity.calculate_metrics(input1=str(b), input2=str(a), fid=True, kid=True,
                                          kid_subset_size=min(1000, len(x)), feature_extractor_weights_path=weights,
                                          cuda=False, save_cpu_ram=True, verbose=False)
    xs, ys = x.permute(0, 2, 3, 1).numpy(), xhat.permute(0, 2, 3, 1).numpy()
    psnr = np.mean([peak_signal_noise_ratio(p, q, data_range=255) for p, q in zip(xs, ys)])
    ssim = np.mean([structural_similarity(p, q, channel_axis=2, data_range=255) for p, q in zip(xs, ys)])
    torch.manual_seed(0)
    lp_model = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    with torch.no_grad():
        lp = torch.cat([lp_model(x[i:i + 64].float() / 127.5 - 1, xhat[i:i + 64].float() / 127.5 - 1).flatten()
                        for i in range(0, len(x), 64)]).mean().item()
    t_peer_all = time.perf_counter() - t

    names = ["rfid", "kid", "psnr", "ssim", "lpips"]
    timings = {}
    for mode in ("cold", "warm"):
        t = time.perf_counter()
        rows = eval_space("jpeg-q30", ds, names, det, batch_size=64, lpips_backbone="random", space=space,
                          cache_features=True)
        timings[mode] = time.perf_counter() - t
    got = {r.metric: r.value for r in rows}
    print(f"values  ulbench: rFID {got['rfid']:.6f} KID {got['kid']:.3e} PSNR {got['psnr']:.4f} "
          f"SSIM {got['ssim']:.5f} LPIPS {got['lpips']:.5f}")
    print(f"values  peers  : FID  {tf['frechet_inception_distance']:.6f} KID "
          f"{tf['kernel_inception_distance_mean']:.3e} PSNR {psnr:.4f} SSIM {ssim:.5f} LPIPS {lp:.5f}")
    print(f"one-pass eval: peers {t_peer_all:.1f}s, ulbench cold {timings['cold']:.1f}s "
          f"(ratio {t_peer_all / timings['cold']:.2f}x), warm cache {timings['warm']:.1f}s "
          f"(ratio {t_peer_all / timings['warm']:.2f}x)")


if __name__ == "__main__":
    main()
