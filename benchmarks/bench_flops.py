"""FLOPs of the SD-VAE (ft-MSE config, random weights) and sd-vae-tiny, fvcore vs torch FlopCounterMode.

Run: python benchmarks/bench_flops.py [--resolution 256] [--tiny-resolution 32]
Prints a FlopReport (fvcore convention: 1 multiply-add = 1 FLOP, plus 2×MAC) and the ratio fvcore /
(FlopCounterMode / 2), which exceeds 1 only by the norms and upsampling fvcore counts.
"""

from __future__ import annotations

import argparse
import time

import torch

from ulbench.metrics.flops import FlopReport, macs_by_operator


def _torch_macs(module: torch.nn.Module, inputs: tuple) -> float:
    """torch.utils.flop_counter total / 2, attention via the MATH backend (its CPU flash kernel is not counted)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH), torch.no_grad():
        module(*inputs)
    return counter.get_total_flops() / 2


def main() -> None:
    """Count and print."""
    from diffusers import AutoencoderKL

    from baselines.diffusers_space import DiffusersSpace
    from baselines.sd_vae_train import tiny_autoencoder_kl

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--tiny-resolution", type=int, default=32)
    args = parser.parse_args()
    sd_config = {"block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
                 "up_block_types": ("UpDecoderBlock2D",) * 4, "layers_per_block": 2, "latent_channels": 4,
                 "sample_size": 256}
    spaces = [DiffusersSpace(AutoencoderKL(**sd_config), "sd-vae-ft-mse-config", 0.0, 0.18215, normalisation="config",
                         source="random init", weights={}, resolution=args.resolution),
              DiffusersSpace(tiny_autoencoder_kl(0), "sd-vae-tiny", 0.0, 1.0, normalisation="none",
                         source="random init", weights={}, resolution=args.tiny_resolution)]
    components = [c for s in spaces for c in s.flop_components()]
    t0 = time.perf_counter()
    report = FlopReport.from_modules(components, title="SD-VAE forward cost per image")
    print(report.to_markdown())
    print(f"(fvcore counting took {time.perf_counter() - t0:.1f} s)\n")
    for name, module, inputs in components:
        by_op = macs_by_operator(module, inputs)
        ref = _torch_macs(module, inputs)
        total = sum(by_op.values())
        print(f"{name}: fvcore {total / 1e9:.4f} GMACs, FlopCounterMode/2 {ref / 1e9:.4f}, ratio {total / ref:.4f}; "
              f"by op (GMACs): { {k: round(v / 1e9, 4) for k, v in by_op.items()} }")


if __name__ == "__main__":
    main()
