"""The one training loop of ulbench [edm2 `training_loop.py`, k-diffusion `train.py`, nanoGPT].

A trainer is an `Objective`: it builds its network and computes per-sample loss terms of a batch from
per-sample noise. The loop owns everything else, once: device and precision (fp32 / bf16 / fp16 with a
GradScaler), DistributedDataParallel (nccl on GPU, gloo on CPU) over each rank's share of the same seeded
global batch, gradient accumulation, AdamW with warm-up (and optional cosine decay), gradient clipping, the
weight EMA, the non-finite guard, seed streams, data loading, atomic safetensors checkpoints with exact resume,
the JSONL log and a rank-0 progress bar with live img/s.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import nn

from ul_models.checkpoint import atomic_write, read_checkpoint, write_checkpoint
from ul_models.seeds import seed_for, stream
from ul_models.training.data import Batch, rank_positions, step_batches
from ul_models.training.noise import SampleNoise
from ulbench import dist
from ulbench.device import Execution, autocast, num_threads, to_device


class Objective(Protocol):
    """What a trainer supplies: its network and the per-sample loss terms of a batch."""

    stream: str  # seed stream name (ul_models.seeds.STREAMS)
    name: str  # shown in the progress bar and in error messages

    def build(self) -> nn.Module:
        """The trainable network (weights initialised from the global RNG, which the loop seeds)."""

    def loss(self, net: nn.Module, batch: Batch, noise: SampleNoise) -> dict[str, torch.Tensor]:
        """Per-sample terms (n,); "loss" is the optimised one, the others are logged (global means)."""


@dataclass(frozen=True)
class LoopConfig:
    """Optimisation and bookkeeping of a run; `resume_key` names everything but `steps` (which may grow)."""

    steps: int  # optimizer steps
    batch_size: int  # global batch (all ranks and accumulation rounds together)
    lr: float = 2e-3  # AdamW peak learning rate
    warmup_steps: int = 50  # linear warm-up steps
    lr_decay: str = "constant"  # constant | cosine (to lr_floor·lr at the last step)
    lr_floor: float = 0.1  # cosine floor as a fraction of lr
    betas: tuple[float, float] = (0.9, 0.99)  # AdamW betas
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    grad_clip: float = 1.0  # global gradient-norm clip (0: off)
    ema: float | None = 0.99  # weight EMA decay (None: no EMA; the final weights are the trained ones)
    seed: int = 0  # all randomness derives from (seed, stream, step, position)
    checkpoint_every: int = 200  # steps between atomic checkpoints (and at the end)
    log_every: int = 1  # steps between JSONL log records (and the first 5 and the last)
    eval_every: int = 0  # steps between rank-0 `evaluate` calls (0: never; always at the end when given)
    num_threads: int | None = None  # torch intra-op threads while training (None: leave)
    channels_last: bool = False  # NHWC weights and activations (faster convolutions on CPU and tensor cores)
    find_unused_parameters: bool = False  # DDP: some parameters get no gradient in some steps
    extra: dict[str, Any] = field(default_factory=dict)  # the trainer's own config, hashed into resume_key

    def lr_at(self, step: int) -> float:
        """Linear warm-up to `lr`, then constant or cosine decay to lr_floor·lr."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.lr_decay == "constant":
            return self.lr
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        return self.lr * (self.lr_floor + (1 - self.lr_floor) * 0.5 * (1 + math.cos(math.pi * progress)))

    def resume_key(self) -> str:
        """Hash of the config without `steps`, checkpoint/log cadence and threads (what a resume may change)."""
        from ulbench.results import config_hash

        keep = {k: v for k, v in self.__dict__.items()
                if k not in ("steps", "checkpoint_every", "log_every", "eval_every", "num_threads")}
        return config_hash(keep)


class NonFiniteError(RuntimeError):
    """A loss term or the gradient norm became NaN/inf; the last good checkpoint is kept."""


class _Step(nn.Module):
    """The network with the objective's loss as forward(), so DDP wraps one call that owns every parameter."""

    def __init__(self, objective: Objective, net: nn.Module):
        super().__init__()
        self.objective, self.net = objective, net

    def forward(self, batch: Batch, noise: SampleNoise) -> dict[str, torch.Tensor]:
        return self.objective.loss(self.net, batch, noise)


def ema_update(ema: nn.Module, net: nn.Module, decay: float) -> None:
    """p_ema ← decay·p_ema + (1 − decay)·p, buffers copied (the one EMA of ulbench)."""
    with torch.no_grad():
        for p_ema, p in zip(ema.parameters(), net.parameters()):
            p_ema.lerp_(p, 1.0 - decay)
        for b_ema, b in zip(ema.buffers(), net.buffers()):
            b_ema.copy_(b)


class Loop:
    """One run of an objective: setup (build, place, wrap, restore) then `run()` or single `step()` calls."""

    def __init__(self, objective: Objective, cfg: LoopConfig, execution: Execution | None = None,
                 checkpoint: str | Path | None = None, log: str | Path | None = None, net_key: str = "net",
                 meta: dict[str, Any] | None = None, state_json: str | Path | None = None):
        self.objective, self.cfg = objective, cfg
        self.execution = execution or Execution()
        self.device = self.execution.torch_device
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.log_path = None if log is None else Path(log)
        self.state_json = Path(state_json) if state_json else (  # a readable copy of the checkpoint state
            None if self.checkpoint is None else self.checkpoint.with_suffix(".state.json"))
        self.net_key, self.meta = net_key, dict(meta or {})
        self.rank, self.world_size = dist.world()
        self.accum_steps = self.execution.accum_steps
        if cfg.batch_size % (self.world_size * self.accum_steps):
            raise ValueError(f"batch_size {cfg.batch_size} must divide by world size × accum_steps "
                             f"({self.world_size} × {self.accum_steps})")
        self.positions = rank_positions(cfg.batch_size, self.rank, self.world_size)
        with torch.random.fork_rng(devices=[]):  # weight init fixed by (seed, stream)
            torch.manual_seed(seed_for(cfg.seed, "init", stream(objective.stream)))
            net = objective.build()
        fmt = torch.channels_last if cfg.channels_last and self.device.type != "meta" else torch.preserve_format
        self.net = net.to(self.device, memory_format=fmt)
        self.ema = copy.deepcopy(self.net).requires_grad_(False) if cfg.ema is not None else None
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                                     weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type if self.device.type != "meta" else "cpu",
                                           enabled=self.execution.precision == "fp16")
        step_module: nn.Module = _Step(objective, self.net)
        if self.world_size > 1 and _distributed():
            from torch.nn.parallel import DistributedDataParallel as DDP

            step_module = DDP(step_module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                              find_unused_parameters=cfg.find_unused_parameters)
        self.step_module = torch.compile(step_module) if self.execution.compile else step_module
        self.start = 0
        self.last_checkpoint = 0

    @property
    def lead(self) -> bool:
        """Rank 0 writes checkpoints, logs and results."""
        return self.rank == 0

    @property
    def weights(self) -> nn.Module:
        """The weights a finished run is used with: the EMA when there is one."""
        return self.ema if self.ema is not None else self.net

    # ----------------------------------------------------------------- one step
    def step(self, step: int, batch: Batch, guard: bool = True) -> dict[str, torch.Tensor]:
        """One optimizer step on this rank's share `batch` of global step `step`; returns global term means.

        With guard=False nothing leaves the device (meta-device tests); with guard=True a non-finite term or
        gradient norm raises NonFiniteError before the update reaches the weights.
        """
        cfg, accum = self.cfg, self.accum_steps
        micro = len(self.positions) // accum
        if any(len(v) != len(self.positions) for v in batch.values() if isinstance(v, torch.Tensor)):
            raise ValueError(f"step {step}: batch share of {len(self.positions)} expected")
        batch = to_device(batch, self.device)
        sums: dict[str, torch.Tensor] = {}
        self.opt.zero_grad(set_to_none=True)
        for a in range(accum):
            part = slice(a * micro, (a + 1) * micro)
            noise = SampleNoise(cfg.seed, self.objective.stream, step, self.positions[part], cfg.batch_size,
                                self.device)
            sync = a == accum - 1 or not hasattr(self.step_module, "no_sync")
            with (self.step_module.no_sync() if not sync else contextlib.nullcontext()), autocast(self.device,
                                                                                 self.execution.precision):
                terms = self.step_module({k: v[part] for k, v in batch.items()}, noise)
            terms = {k: v.float() for k, v in terms.items()}
            loss = terms["loss"].sum() / len(self.positions)  # DDP averages ranks: the global-batch mean
            (self.scaler.scale(loss) if self.scaler.is_enabled() else loss).backward()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.detach().double().sum()
        names = list(sums)  # the objective's order (the same on every rank)
        totals = torch.stack([sums[k] for k in names])
        if self.world_size > 1 and _distributed():
            torch.distributed.all_reduce(totals)
        means = totals / cfg.batch_size
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.opt)
        params = [p for p in self.net.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        if guard:  # one device sync per step: every term, then the gradient norm (fp16: the scaler skips inf steps)
            checked = torch.cat([means, grad_norm.detach().double().reshape(1)]).tolist()
            keys = names + ([] if self.scaler.is_enabled() else ["grad_norm"])
            bad = [(k, v) for k, v in zip(keys, checked) if not math.isfinite(v)]
            if bad:
                raise NonFiniteError(step, *bad[0])
        for group in self.opt.param_groups:
            group["lr"] = cfg.lr_at(step)
        if self.scaler.is_enabled():
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        if self.ema is not None:
            ema_update(self.ema, self.net, cfg.ema)
        return {**dict(zip(names, means)), "grad_norm": grad_norm.detach()}

    # ----------------------------------------------------------------- checkpoints
    def save(self, step: int) -> None:
        """Atomic safetensors checkpoint of net, EMA, AdamW, GradScaler and the JSON state (rank 0)."""
        if self.checkpoint is None or not self.lead:
            return
        modules = {self.net_key: self.net, **({"ema": self.ema} if self.ema is not None else {})}
        state = {**self.meta, "step": step, "resume_key": self.cfg.resume_key(),
                 "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                 "rng": {"scheme": "sample p of step s draws from seed_for(seed, stream, s, p); nothing else to "
                                   "restore", "seed": self.cfg.seed, "stream": self.objective.stream},
                 "data_order": {"scheme": "epoch permutations seeded by seed_for(seed, 'data_order', epoch)",
                                "samples_seen": step * self.cfg.batch_size}}
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        write_checkpoint(self.checkpoint, modules, self.opt, state)
        atomic_write(self.state_json, lambda p: p.write_text(json.dumps(state, indent=2, default=str)))
        self.last_checkpoint = step

    def restore(self) -> int:
        """Load the checkpoint if there is one (resume); returns the step to continue from."""
        if self.checkpoint is None or not self.checkpoint.exists():
            return 0
        modules = {self.net_key: self.net, **({"ema": self.ema} if self.ema is not None else {})}
        state = read_checkpoint(self.checkpoint, modules, self.opt)[0]
        if state.get("resume_key") != self.cfg.resume_key():
            raise ValueError(f"{self.checkpoint} was trained with another {self.objective.name} config (only `steps` "
                             "may change on resume); resume with the saved config or use a new run directory")
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.start = self.last_checkpoint = int(state["step"])
        return self.start

    # ----------------------------------------------------------------- the run
    def run(self, data: Any, resume: bool = True, progress: bool = True,
            evaluate: Callable[[nn.Module], dict[str, Any]] | None = None) -> dict[str, Any]:
        """Train to `cfg.steps` from the checkpoint (if resuming), logging on rank 0; returns a summary."""
        with num_threads(self.cfg.num_threads), _deterministic(self.device):
            return self._run(data, resume, progress, evaluate)

    def _run(self, data, resume, progress, evaluate) -> dict[str, Any]:
        cfg = self.cfg
        if self.checkpoint is not None and self.checkpoint.exists() and not resume:
            raise ValueError(f"{self.checkpoint} exists; resume it or pick a new run directory")
        start = self.restore() if resume else 0
        if self.lead and self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            _truncate_log(self.log_path, start)
        dist.barrier()
        bar = None
        if progress and self.lead:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.steps, initial=start, desc=self.objective.name, dynamic_ncols=True, leave=False)
        pin = self.device.type == "cuda"
        batches = step_batches(data, cfg.batch_size, cfg.seed, start, cfg.steps, self.positions,
                               self.execution.num_workers, pin)
        t_run, last, last_eval = time.perf_counter(), {}, {}
        window = (time.perf_counter(), start)
        for step, batch in zip(range(start, cfg.steps), batches):
            self.net.train()
            try:
                out = self.step(step, batch)
            except NonFiniteError as err:
                s, term, value = err.args
                raise NonFiniteError(
                    f"{self.objective.name}: non-finite loss at step {s}: term {term!r} = {value}. Training stopped "
                    f"before the update; the last good checkpoint (step {self.last_checkpoint}) is kept"
                    f"{' in ' + str(self.checkpoint) if self.checkpoint else ''}. Try a lower lr (now {cfg.lr}), "
                    f"a smaller grad_clip (now {cfg.grad_clip}) or --precision fp32.") from None
            done = step + 1
            last = {"step": done, "lr": cfg.lr_at(step),
                    **dict(zip(out, torch.stack([v.double() for v in out.values()]).tolist()))}
            now = time.perf_counter()
            if now - window[0] > 0:
                last["img_per_s"] = (done - window[1]) * cfg.batch_size / (now - window[0])
            if done - window[1] >= 20:
                window = (now, done)
            evaluated = evaluate is not None and self.lead and cfg.eval_every > 0 and (
                done % cfg.eval_every == 0 or done == cfg.steps)
            if evaluated:
                self.weights.eval()
                last_eval = evaluate(self.weights)
                last.update(last_eval)
            if self.lead and self.log_path is not None and (done % cfg.log_every == 0 or done == cfg.steps
                                                            or done <= 5 or evaluated):
                with open(self.log_path, "a") as fh:
                    fh.write(json.dumps(last) + "\n")
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                self.save(done)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{last['loss']:.4g}", img_s=f"{last.get('img_per_s', 0):.0f}")
        if bar is not None:
            bar.close()
        dist.barrier()
        train_s = time.perf_counter() - t_run
        self.weights.eval()
        return {"steps": cfg.steps, "resumed_from": start, "samples_seen": cfg.steps * cfg.batch_size,
                "train_s": train_s, "img_per_s": (cfg.steps - start) * cfg.batch_size / max(train_s, 1e-9),
                "last": last, "eval": last_eval, "execution": self.execution.provenance(),
                "world_size": self.world_size, "accum_steps": self.accum_steps,
                "params": sum(p.numel() for p in self.net.parameters())}


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _truncate_log(path: Path, step: int) -> None:
    """Keep log records up to `step` (the checkpoint a resumed run restarts from)."""
    if not path.exists():
        return
    if step == 0:
        path.unlink()
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
    atomic_write(path, lambda p: p.write_text("".join(line + "\n" for line in keep)))


class _deterministic:
    """Deterministic CPU kernels while training (bit-exact resume, as tested)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        self.before = torch.are_deterministic_algorithms_enabled()
        if self.device.type == "cpu":  # on GPUs speed wins: resume there is exact up to kernel rounding
            torch.use_deterministic_algorithms(True)
        return self

    def __exit__(self, *exc):
        torch.use_deterministic_algorithms(self.before)
        return False

