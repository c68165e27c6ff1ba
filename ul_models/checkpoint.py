"""Safetensors checkpoints of modules + AdamW state with a JSON state in the metadata (no pickles), atomic.

Each checkpoint carries the sha256 of its tensors in the metadata (`tensors_sha256`), checked on every read; the
file is read once, and its own sha256 comes back in the state (`checkpoint_sha256`) for result provenance. A file
that cannot be read or does not match is a CheckpointError (a ValueError: one `error:` line from the CLI)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file


class CheckpointError(ValueError):
    """A checkpoint file that is damaged, truncated or changed since it was written."""

    def __init__(self, path: Path, problem: str):
        self.path = path
        super().__init__(f"{path}: {problem}; delete it and rerun the training that wrote it (run folder "
                         f"{path.parent}; a finished run also needs its done.json / summary file deleted)")


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors by sorted name: name, dtype, shape and raw bytes (what `tensors_sha256` holds)."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().contiguous().cpu()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call `write(tmp)` then rename over `path`: readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def write_checkpoint(path: Path, modules: dict[str, torch.nn.Module], opt: torch.optim.Optimizer | None,
                     state: dict[str, Any], extra: dict[str, torch.Tensor] | None = None) -> None:
    """Modules under their prefixes, optimizer tensors as optim.<param>.<key>, `state` (+ param groups) as JSON."""
    tensors = {f"{prefix}.{k}": v.detach().contiguous() for prefix, m in modules.items()
               for k, v in m.state_dict().items()}
    state = dict(state)
    if opt is not None:
        opt_state = opt.state_dict()
        for idx, st in opt_state["state"].items():
            for key, value in st.items():
                tensors[f"optim.{idx}.{key}"] = torch.as_tensor(value).detach().contiguous()
        state["param_groups"] = [{k: v for k, v in g.items() if k != "params"} for g in opt_state["param_groups"]]
    tensors.update(extra or {})
    meta = {"state": json.dumps(state), "tensors_sha256": tensors_sha256(tensors)}
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata=meta))


def _read(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], str]:
    """(JSON state, tensors, file sha256) of a checkpoint read once and verified; CheckpointError otherwise."""
    path = Path(path)
    try:
        data = path.read_bytes()
        (header_len,) = struct.unpack("<Q", data[:8])
        meta = json.loads(data[8:8 + header_len]).get("__metadata__") or {}
        tensors = load_safetensors(data)
        state = json.loads(meta["state"])
    except OSError:
        raise
    except Exception as e:  # SafetensorError (truncated), struct/JSON errors, no state: damaged
        raise CheckpointError(path, f"not a readable checkpoint ({type(e).__name__}: {e})") from None
    stored = meta.get("tensors_sha256")
    if stored is not None and tensors_sha256(tensors) != stored:
        raise CheckpointError(path, "its tensors do not match the sha256 written with them (the file changed after "
                                    "training wrote it)")
    state["checkpoint_sha256"] = hashlib.sha256(data).hexdigest()
    state["checkpoint_verified"] = stored is not None
    return state, tensors, state["checkpoint_sha256"]


def read_checkpoint(path: Path, modules: dict[str, torch.nn.Module | None],
                    opt: torch.optim.Optimizer | None = None) -> tuple[dict[str, Any], Callable[[str], torch.Tensor]]:
    """Restore the given modules and optimizer from a verified checkpoint (read once; CheckpointError when damaged
    or changed); returns the JSON state (with the file's `checkpoint_sha256`) and a getter for other tensors."""
    state, tensors, _ = _read(path)
    keys = list(tensors)
    for prefix, module in modules.items():
        if module is not None:
            n = len(prefix) + 1
            module.load_state_dict({k[n:]: tensors[k] for k in keys if k.startswith(prefix + ".")})
    if opt is not None:
        per_param: dict[int, dict[str, torch.Tensor]] = {}
        for k in keys:
            if k.startswith("optim."):
                _, idx, name = k.split(".", 2)
                per_param.setdefault(int(idx), {})[name] = tensors[k]
        groups = [{**g, "params": og["params"]}
                  for g, og in zip(state["param_groups"], opt.state_dict()["param_groups"])]
        opt.load_state_dict({"state": per_param, "param_groups": groups})
    others = {k: tensors[k] for k in keys if k.startswith("rng.")}
    return state, others.__getitem__
