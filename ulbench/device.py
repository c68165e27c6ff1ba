"""Where and in what precision a job computes: `--device`, `--precision`, one meaning for every command.

Models and batches go to `resolve_device(name)`; compute runs under `autocast(device, precision)`; every loss,
bound and metric is accumulated in float32/float64 by its caller whatever the compute precision. Random numbers
are drawn on CPU generators and moved (see `ul_models.training.noise`), so results do not depend on the device
beyond float rounding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch

DEVICES = ("auto", "cpu", "cuda", "mps", "meta")  # meta: tests of device discipline without a GPU
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # autocast dtype (None: off)


@dataclass(frozen=True)
class Execution:
    """How a job runs (not what it computes): the same flags on every command and in suites."""

    device: str = "auto"  # auto | cpu | cuda[:N] | mps (meta only in tests)
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 adds a GradScaler when training)
    compile: bool = False  # torch.compile the networks (training and sampling)
    num_workers: int = 0  # DataLoader worker processes (0: load in the main process)
    batch_size: int | None = None  # evaluation / sampling micro-batch (None: the command's default)
    accum_steps: int = 1  # training: gradient accumulation rounds per step (same update, 1/accum the memory)

    def __post_init__(self):
        check_precision(self.precision)
        if self.num_workers < 0:
            raise ValueError(f"--num-workers must be >= 0, got {self.num_workers}")
        if self.accum_steps < 1:
            raise ValueError(f"--accum-steps must be >= 1, got {self.accum_steps}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")

    @property
    def torch_device(self) -> torch.device:
        """The resolved torch.device."""
        return resolve_device(self.device)

    def provenance(self) -> dict[str, Any]:
        """Device (resolved, with its name), precision and compile flag for result provenance."""
        return {"device": describe(self.torch_device), "precision": self.precision, "compile": self.compile}

    def replace(self, **changes: Any) -> "Execution":
        """A copy with some fields changed (None values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """'auto' → cuda:LOCAL_RANK when CUDA is available, else mps, else cpu; 'cuda' picks this rank's GPU."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip()
    base = name.split(":", 1)[0]
    if base not in DEVICES:
        raise ValueError(f"unknown device {name!r}; expected one of {', '.join(DEVICES[:4])} (or cuda:N)")
    if base == "auto":
        if torch.cuda.is_available():
            base, name = "cuda", "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        else:
            return torch.device("cpu")
    if base == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is visible here (torch.cuda.is_available() is False); "
                             "use --device cpu or auto")
        if name == "cuda":  # under torchrun each rank takes its own GPU
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    if base == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise ValueError("--device mps: MPS is not available here; use --device cpu or auto")
    return torch.device(name)


def check_precision(precision: str) -> str:
    """Validate a precision name (fp32, bf16, fp16)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """torch.autocast for bf16/fp16 on `device` (fp32: a no-op); meta runs without autocast."""
    dtype = PRECISIONS[check_precision(precision)]
    if dtype is None or device.type == "meta":
        return contextlib.nullcontext()
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError("--precision fp16 needs a GPU (CPU autocast supports bf16); use bf16 or fp32 on CPU")
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move every tensor of a batch to `device` (non-blocking from pinned memory)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Set torch's intra-op threads for a block (None: leave as is) and restore them after."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def describe(device: torch.device) -> str:
    """A device's name for provenance ('cpu', 'cuda:0 NVIDIA H100 80GB HBM3', ...)."""
    if device.type == "cuda":
        return f"{device} {torch.cuda.get_device_name(device)}"
    return str(device)
