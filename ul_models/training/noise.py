"""Per-sample random draws of one training step, on CPU generators, moved to the device [ours].

Sample p of step s (p its position in the global batch) draws from its own generator seeded by
`seed_for(seed, stream, s, p)`; stratified times share one u per step and call. So a rank's share, an
accumulation micro-batch, the batch layout or the device never change what any sample sees, and N processes
train the same model as one up to float rounding.
"""

from __future__ import annotations

import numpy as np
import torch

from ul_models.seeds import seed_for


class SampleNoise:
    """Draws for the samples at `positions` of a global batch of `batch_size` at training step `step`."""

    def __init__(self, seed: int, stream: str, step: int, positions: np.ndarray | list[int], batch_size: int,
                 device: torch.device | str = "cpu"):
        self.positions = np.asarray(positions, dtype=np.int64)
        self.batch_size, self.device = int(batch_size), torch.device(device)
        self._seed, self._stream, self._step, self._calls = int(seed), stream, int(step), 0
        self._gens = [torch.Generator().manual_seed(seed_for(seed, stream, step, int(p))) for p in self.positions]

    def __len__(self) -> int:
        return len(self.positions)

    def randn(self, *shape: int) -> torch.Tensor:
        """(n, *shape) standard normal, row i from sample i's generator."""
        return self._stack(lambda g: torch.randn(shape, generator=g))

    def rand(self, *shape: int) -> torch.Tensor:
        """(n, *shape) uniform [0, 1), row i from sample i's generator."""
        return self._stack(lambda g: torch.rand(shape, generator=g))

    def stratified_t(self) -> torch.Tensor:
        """(n,) low-discrepancy times over the global batch, (u + p/B) mod 1 with one u per call (VDM §3.4)."""
        self._calls += 1
        gen = torch.Generator().manual_seed(seed_for(self._seed, self._stream, self._step, -self._calls))
        u = torch.rand((), generator=gen, dtype=torch.float64)
        t = (u + torch.from_numpy(self.positions).double() / self.batch_size) % 1.0
        return t.float().to(self.device)

    def _stack(self, draw) -> torch.Tensor:
        if not self._gens:
            raise ValueError("SampleNoise: no samples to draw for")
        return torch.stack([draw(g) for g in self._gens]).to(self.device, non_blocking=True)
