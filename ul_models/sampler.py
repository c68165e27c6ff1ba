"""DDIM / ancestral samplers in log-SNR with per-sample seeds (UL-SPEC §6; DDIM, VDM, edm2).

Sample i depends only on seeds[i]: every sample owns a torch.Generator (edm2's StackedRandomGenerator) and the
network runs on fixed-size micro-batches (the last one padded), because CPU convolutions give slightly
different floats at different batch sizes. So outputs never depend on how callers batch them. Noise is drawn on
CPU generators and moved to the device (`device=`), so outputs do not depend on the device beyond float rounding;
the network runs under `autocast(device, precision)` while the sampler state stays float32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ul_models.losses import mix_seed
from ul_models.schedule import Schedule, alpha_sigma
from ul_models.seeds import STREAMS
from ulbench.device import autocast

SAMPLER_STREAM = STREAMS["sampler"]  # seed stream of sampler noise (ul_models.seeds)

CondEpsFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


class StackedRandomGenerator:
    """One torch.Generator per sample; draws are stacked along the batch (edm2 `StackedRandomGenerator`)."""

    def __init__(self, seeds: Sequence[int] | torch.Tensor, stream: int = 0):
        self.generators = [torch.Generator().manual_seed(mix_seed(int(s), stream)) for s in seeds]

    def randn(self, shape: Sequence[int], dtype: torch.dtype = torch.float32,
              device: torch.device | str | None = None) -> torch.Tensor:
        """Standard normal draws of per-sample `shape`, stacked to (N, *shape), drawn on CPU and moved to `device`."""
        z = torch.stack([torch.randn(tuple(shape), generator=g, dtype=dtype) for g in self.generators])
        return z if device is None else z.to(device, non_blocking=True)


def map_microbatches(
    fn: Callable[..., torch.Tensor], tensors: Sequence[torch.Tensor | None], micro_batch: int
) -> torch.Tensor:
    """Apply `fn` to fixed-size chunks (the last padded with its final row): rows become batch-invariant."""
    n = next(t.shape[0] for t in tensors if t is not None)
    outs = []
    for start in range(0, n, micro_batch):
        stop = min(start + micro_batch, n)
        chunk = []
        for t in tensors:
            if t is None:
                chunk.append(None)
                continue
            part = t[start:stop]
            if stop - start < micro_batch:
                part = torch.cat([part, part[-1:].expand(micro_batch - (stop - start), *part.shape[1:])])
            chunk.append(part.contiguous())
        outs.append(fn(*chunk)[: stop - start])
    return torch.cat(outs)


def logsnr_grid(schedule: Schedule, steps: int, logsnr_max: float | None = None) -> torch.Tensor:
    """steps+1 log-SNRs at t = 1, (steps−1)/steps, ..., 0 (noise to data), float64."""
    if steps < 1:
        raise ValueError(f"sampler steps must be >= 1, got {steps}; use e.g. 32")
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return schedule.logsnr(t, logsnr_max)


@torch.no_grad()
def sample(
    eps_fn: CondEpsFn,
    shape: Sequence[int],
    seeds: Sequence[int] | torch.Tensor,
    schedule: Schedule,
    steps: int,
    cond: torch.Tensor | None = None,
    eta: float = 0.0,
    clip_x: float | None = None,
    return_noisy: bool = False,
    micro_batch: int = 16,
    stream: int = SAMPLER_STREAM,
    device: torch.device | str | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    """DDIM (eta=0) or ancestral (eta=1) sampling from λ_min to λ_max (Song et al. 2021; VDM eq. 32).

    `eps_fn(z_t, logsnr, cond)` returns ε̂; `shape` is per sample. Returns the denoised x̂ at the last step, or
    with `return_noisy` the sample z at λ_max itself (the noisy latent z₀ at λ₀ in stage 2, UL-SPEC §2).
    The state lives on `device` (default: `cond`'s device, else CPU); `eps_fn` runs under `autocast(device,
    precision)` and its output is cast to float32.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1] (0 = DDIM, 1 = ancestral), got {eta}")
    seeds = [int(s) for s in seeds]
    device = torch.device(device) if device is not None else (cond.device if cond is not None else torch.device("cpu"))
    grid = logsnr_grid(schedule, steps)
    rng_seeds = torch.tensor(seeds, dtype=torch.int64)

    def run(seed_chunk: torch.Tensor, cond_chunk: torch.Tensor | None) -> torch.Tensor:
        gen = StackedRandomGenerator(seed_chunk.tolist(), stream)
        z = gen.randn(shape, device=device)
        x_hat = z
        for i in range(steps):
            lam_t, lam_s = grid[i], grid[i + 1]
            alpha_t, sigma_t = alpha_sigma(lam_t)
            alpha_s, sigma_s = alpha_sigma(lam_s)
            lam = torch.full((z.shape[0],), float(lam_t), device=device)
            with autocast(device, precision):
                eps_hat = eps_fn(z, lam, cond_chunk)
            eps_hat = eps_hat.float()
            x_hat = (z - float(sigma_t) * eps_hat) / float(alpha_t)
            if clip_x is not None:
                x_hat = x_hat.clamp(-clip_x, clip_x)
                eps_hat = (z - float(alpha_t) * x_hat) / float(sigma_t)
            if i == steps - 1 and not return_noisy:
                break
            # posterior q(z_s|z_t, x̂): variance c·σ_s², c = 1 − e^{λ_t − λ_s}; eta: DDIM ↔ ancestral
            c = float(-torch.expm1(lam_t - lam_s))
            var = (eta**2) * c * float(sigma_s) ** 2
            dir_scale = max(float(sigma_s) ** 2 - var, 0.0) ** 0.5
            noise = gen.randn(shape, device=device) if eta > 0 else 0.0
            z = float(alpha_s) * x_hat + dir_scale * eps_hat + var**0.5 * noise
        return z if return_noisy else x_hat

    return map_microbatches(run, [rng_seeds, cond], micro_batch)
