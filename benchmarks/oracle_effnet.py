"""EfficientNet-Lite0 against its reference implementation, and its speed.

Checks ulbench's hand-written EfficientNet-Lite0 (ulbench/metrics/effnet.py) against `efficientnet-lite-pytorch`
0.1.0 (the lukemelas port to Lite, fixed 224-px static padding) on the same weights and the same preprocessed input:
max |Δ| of the 1280-d pooled features and of the 1000 logits (must be ≤ 1e-5), the top-1 classes of the bundled
photos, then ms/image of the detector (preprocessing included) at the threads given.

    pip install --no-deps efficientnet-lite-pytorch==0.1.0   # 22 kB, needs only torch
    PYTHONPATH=. python benchmarks/oracle_effnet.py --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

CLASS_NAMES = {281: "tabby", 282: "tiger cat", 285: "Egyptian cat", 504: "coffee mug", 540: "drilling platform",
               560: "football helmet", 657: "missile", 665: "moped", 670: "motor scooter", 744: "projectile",
               812: "space shuttle", 967: "espresso", 968: "cup"}


def photos() -> dict[str, torch.Tensor]:
    """The bundled scikit-image colour photos as uint8 (1, 3, H, W)."""
    import skimage.data

    out = {}
    for name in ("chelsea", "coffee", "rocket", "stereo_motorcycle", "astronaut"):
        img = getattr(skimage.data, name)()
        img = img[0] if name == "stereo_motorcycle" else img
        out[name] = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=64, help="images for the timing (32×32 embedded crops)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        print("oracle missing: pip install --no-deps efficientnet-lite-pytorch==0.1.0", file=sys.stderr)
        return 2
    from ulbench.metrics.effnet import EffNetDetector, effnet_preprocess

    det = EffNetDetector()
    oracle = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=det.weights_path).eval()
    worst_feat = worst_logit = 0.0
    for name, x in photos().items():
        inp = effnet_preprocess(x)
        with torch.no_grad():
            ref_feat = oracle._avg_pooling(oracle.extract_features(inp)).flatten(1)
            ref_logits = oracle(inp)
            feat, logits = det.model.features(inp), det.model(inp)
        d_feat, d_logit = (feat - ref_feat).abs().max().item(), (logits - ref_logits).abs().max().item()
        worst_feat, worst_logit = max(worst_feat, d_feat), max(worst_logit, d_logit)
        p = logits.softmax(1)[0]
        top = p.argmax().item()
        print(f"{name:>18}: top-1 {top} {CLASS_NAMES.get(top, '?'):<17} p={p[top]:.3f}  "
              f"max|Δ| features {d_feat:.2e}, logits {d_logit:.2e}")
    ok = worst_feat <= 1e-5 and worst_logit <= 1e-5
    print(f"parity vs efficientnet-lite-pytorch 0.1.0: features {worst_feat:.2e}, logits {worst_logit:.2e} "
          f"({'OK' if ok else 'FAIL'}: ≤ 1e-5)")

    from ulbench.data.embedded import embedded_photos

    ds = embedded_photos("eval")
    x, _ = ds.get(np.arange(min(args.images, len(ds))))  # uint8 (N, 3, 32, 32) crops of the embedded default
    det.features(x[:16])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(x), args.batch_size):
        det.features(x[i:i + args.batch_size])
    ms = (time.perf_counter() - t0) / len(x) * 1000
    print(f"EffNet-Lite0 detector: {ms:.1f} ms/image at 224 px ({args.threads} threads, {len(x)} images of "
          f"{tuple(x.shape[-2:])}, micro-batch {det.micro_batch})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
