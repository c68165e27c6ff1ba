"""Safetensors checkpoints of modules + AdamW state with a JSON state in the metadata (no pickles), atomic."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import safe_open
from safetensors.torch import save_file


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
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata={"state": json.dumps(state)}))


def read_checkpoint(path: Path, modules: dict[str, torch.nn.Module | None],
                    opt: torch.optim.Optimizer | None = None) -> tuple[dict[str, Any], Callable[[str], torch.Tensor]]:
    """Restore the given modules and optimizer; returns the JSON state and a getter for other tensors."""
    with safe_open(str(path), framework="pt") as f:
        state = json.loads(f.metadata()["state"])
        keys = list(f.keys())
        for prefix, module in modules.items():
            if module is not None:
                n = len(prefix) + 1
                module.load_state_dict({k[n:]: f.get_tensor(k) for k in keys if k.startswith(prefix + ".")})
        if opt is not None:
            per_param: dict[int, dict[str, torch.Tensor]] = {}
            for k in keys:
                if k.startswith("optim."):
                    _, idx, name = k.split(".", 2)
                    per_param.setdefault(int(idx), {})[name] = f.get_tensor(k)
            groups = [{**g, "params": og["params"]}
                      for g, og in zip(state["param_groups"], opt.state_dict()["param_groups"])]
            opt.load_state_dict({"state": per_param, "param_groups": groups})
        others = {k: f.get_tensor(k) for k in keys if k.startswith("rng.")}
    return state, others.__getitem__
