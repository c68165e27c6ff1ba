"""Forward, training and sampling FLOPs with fvcore (UL-SPEC §8; edm2 `count_flops.py`).

Convention: fvcore counts one multiply-add (MAC) as one FLOP. Every number here is named by its unit:
`*_macs` / `gmacs_*` are multiply-adds (fvcore's "FLOPs"), `gflops_2x_*` = 2 × MACs (the convention of
`torch.utils.flop_counter` and most hardware peak figures). fvcore also counts norms (4-5 per element),
upsampling (1 per output element) and adaptive pooling; it ignores other element-wise ops (activations,
additions, softmax). `aten::scaled_dot_product_attention` is added here: QKᵀ and AV, B·H·Lq·Lk·(D + Dv) MACs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ulbench.markdown import md_escape

CONVENTION = "fvcore convention: 1 multiply-add = 1 FLOP (GMACs); gflops_2x = 2 × GMACs"
TRAINING_MULTIPLIER = 3  # forward + backward ≈ 3 × forward (UL-SPEC §8; Kaplan et al. 2020)


def _flop_count_analysis():
    """Import fvcore's FlopCountAnalysis, silencing its torch.jit.script FutureWarnings (ENVIRONMENT.md)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis
    return FlopCountAnalysis


def _shape(value: Any) -> list[int] | None:
    """Static shape of a traced torch._C.Value (None for non-tensors)."""
    return value.type().sizes() if value.isCompleteTensor() else None


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """MACs of scaled_dot_product_attention: QKᵀ (B·H·Lq·Lk·D) plus AV (B·H·Lq·Lk·Dv) (Vaswani et al. 2017)."""
    q, k, v = (_shape(x) for x in inputs[:3])
    if q is None or k is None or v is None:
        raise ValueError(f"scaled_dot_product_attention with unknown shapes q={q} k={k} v={v}")
    batch = math.prod(q[:-2])  # B·H (any leading dims)
    lq, d = q[-2], q[-1]
    lk, dv = k[-2], v[-1]
    return int(batch * lq * lk * (d + dv))


def native_mha_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """MACs of nn.MultiheadAttention's fast path: in-projections, QKᵀ, AV and out-projection (Vaswani et al. 2017)."""
    q, k = _shape(inputs[0]), _shape(inputs[1])
    if q is None or k is None:
        raise ValueError(f"_native_multi_head_attention with unknown shapes q={q} k={k}")
    batch, lq, e = math.prod(q[:-2]), q[-2], q[-1]
    lk = k[-2]
    return int(batch * (lq * e * e + 2 * lk * e * e + 2 * lq * lk * e + lq * e * e))


HEAVY_OP_HINTS = ("attention", "conv", "matmul", "mm", "lstm", "gru", "rnn", "linear", "einsum")


def flop_analysis(module: torch.nn.Module, example_inputs: tuple) -> Any:
    """An fvcore FlopCountAnalysis with the SDPA handle and warnings silenced (fvcore docs)."""
    if not isinstance(example_inputs, tuple):
        raise TypeError(f"example_inputs must be a tuple of positional inputs, got {type(example_inputs).__name__}; "
                         "wrap a single tensor as (x,)")
    analysis = _flop_count_analysis()(module, example_inputs)
    analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
    analysis.set_op_handle("aten::_native_multi_head_attention", native_mha_flop_jit)
    return analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)


def count_forward_macs(module: torch.nn.Module, example_inputs: tuple) -> int:
    """Forward multiply-adds of one call on `example_inputs` (whole batch), fvcore convention."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # jit tracer warnings about python control flow
            analysis = flop_analysis(module, example_inputs)
            total = int(analysis.total())
            skipped = analysis.unsupported_ops()
    finally:
        module.train(was_training)
    heavy = sorted(op for op in skipped if any(h in op.lower() for h in HEAVY_OP_HINTS))
    if heavy:
        warnings.warn(f"fvcore has no FLOP formula for {heavy}; they are NOT counted in {total} MACs. "
                      "Add a handle with set_op_handle (see ulbench.metrics.flops).", RuntimeWarning, stacklevel=2)
    return total


def macs_by_operator(module: torch.nn.Module, example_inputs: tuple) -> dict[str, int]:
    """Forward multiply-adds split by aten operator (to see what fvcore counts)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {k: int(v) for k, v in flop_analysis(module.eval(), example_inputs).by_operator().items()}


def _batch_size(example_inputs: tuple) -> int:
    """Leading dimension of the first tensor input."""
    for x in example_inputs:
        if isinstance(x, torch.Tensor) and x.ndim > 0:
            return int(x.shape[0])
    raise ValueError("example_inputs hold no batched tensor; expected e.g. (torch.randn(1, 3, 32, 32),)")


def forward_gmacs_per_sample(module: torch.nn.Module, example_inputs: tuple) -> float:
    """Forward GMACs per sample: fvcore total / batch size / 1e9 (edm2 `count_flops.py`)."""
    return count_forward_macs(module, example_inputs) / _batch_size(example_inputs) / 1e9


def training_flops(forward_macs_per_sample: float, samples_seen: int) -> dict[str, float]:
    """Training cost = 3 × forward × samples seen (UL-SPEC §8), in MACs and 2×MAC FLOPs."""
    if samples_seen < 0 or forward_macs_per_sample < 0:
        raise ValueError(f"need non-negative counts, got forward_macs_per_sample={forward_macs_per_sample}, "
                         f"samples_seen={samples_seen}")
    macs = float(TRAINING_MULTIPLIER) * float(forward_macs_per_sample) * float(samples_seen)
    return {"training_macs": macs, "training_flops_2x": 2.0 * macs, "samples_seen": int(samples_seen),
            "multiplier": TRAINING_MULTIPLIER, "convention": CONVENTION}


def sampling_macs(forward_macs_per_sample: float, steps: int) -> float:
    """Sampling cost per sample = forward MACs × network evaluations (UL-SPEC §8)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return float(forward_macs_per_sample) * int(steps)


def count_params(module: torch.nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in module.parameters())


@dataclass(frozen=True)
class FlopRow:
    """One component's forward cost per sample."""

    component: str
    params: int
    gmacs_per_sample: float

    @property
    def gflops_2x_per_sample(self) -> float:
        """2 × GMACs (one multiply-add = two FLOPs)."""
        return 2.0 * self.gmacs_per_sample

    def as_dict(self) -> dict[str, Any]:
        """Row as a plain dict with both conventions."""
        return {**asdict(self), "gflops_2x_per_sample": self.gflops_2x_per_sample}


@dataclass
class FlopReport:
    """A table of per-component forward costs that states its FLOP convention (UL-SPEC §8)."""

    rows: list[FlopRow]
    title: str = "Forward cost per sample"

    @classmethod
    def from_modules(cls, components: Iterable[tuple[str, torch.nn.Module, tuple]], title: str = "Forward cost "
                     "per sample") -> FlopReport:
        """Count (name, module, example_inputs) triples with fvcore."""
        rows = [FlopRow(name, count_params(m), forward_gmacs_per_sample(m, inputs)) for name, m, inputs in components]
        return cls(rows, title)

    def to_dicts(self) -> list[dict[str, Any]]:
        """Rows as dicts (for pandas / JSON)."""
        return [r.as_dict() for r in self.rows]

    def to_markdown(self) -> str:
        """Markdown table; the caption states the MAC convention."""
        lines = [f"**{self.title}** ({CONVENTION}).", "",
                 "| component | params | GMACs/sample | GFLOPs (2×MAC)/sample |", "| --- | ---: | ---: | ---: |"]
        for r in self.rows:
            lines.append(f"| {md_escape(r.component)} | {r.params:,} | {r.gmacs_per_sample:.4g} "
                         f"| {r.gflops_2x_per_sample:.4g} |")
        return "\n".join(lines) + "\n"
