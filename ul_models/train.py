"""Stage-1 training loop of Unified Latents: encoder, prior and decoder jointly (UL-SPEC §5).

Every step's randomness (batch order, flips, noise, t) derives from (seed, step), so a run resumed from a
checkpoint ends bit-identical to an uninterrupted one. Checkpoints are safetensors (no pickles), written
atomically.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ul_models.checkpoint import atomic_write, read_checkpoint, write_checkpoint
from ul_models.config import ULConfig
from ul_models.losses import bits_per_latent_dim, bits_per_pixel, mix_seed
from ul_models.model import UnifiedLatents, build_stage1

CHECKPOINT = "checkpoint.safetensors"  # model, EMA, optimizer, torch RNG; JSON state in the metadata
STATE_JSON = "checkpoint.json"  # readable copy of the checkpoint state (step, RNG and data-order scheme)
COLLAPSE_BPP = 0.005  # below this the latent carries (almost) nothing: warn (UL-SPEC §5)
LOSS_TERMS = ("total", "prior", "prior_diffusion", "prior_kl_end", "dec", "dec_elbo")


def to_unit(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float [−1, 1]."""
    return x_uint8.float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [−1, 1] → uint8 [0, 255] (round half up, clamp)."""
    return ((x.clamp(-1, 1) + 1.0) * 127.5 + 0.5).floor().clamp(0, 255).to(torch.uint8)


def psnr_db(x_uint8: torch.Tensor, y_uint8: torch.Tensor) -> np.ndarray:
    """Per-image PSNR in dB of uint8 images (peak 255)."""
    mse = (x_uint8.double() - y_uint8.double()).square().flatten(1).mean(1)
    return (10.0 * torch.log10(255.0**2 / mse.clamp_min(1e-10))).numpy()


def batch_indices(step: int, batch_size: int, num_images: int, seed: int) -> np.ndarray:
    """Dataset indices of one step: a fresh permutation per epoch seeded by (seed, epoch), read in order."""
    pos = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.int64)
    out = np.empty_like(pos)
    for epoch in np.unique(pos // num_images):
        perm = np.random.default_rng(mix_seed(seed, 1_000_000 + int(epoch))).permutation(num_images)
        sel = pos // num_images == epoch
        out[sel] = perm[pos[sel] % num_images]
    return out


def lr_at(step: int, cfg: ULConfig) -> float:
    """Linear warm-up to `lr` over `warmup_steps`, then constant."""
    return cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))


def train_step(
    model: UnifiedLatents,
    ema: UnifiedLatents,
    opt: torch.optim.Optimizer,
    x_uint8: torch.Tensor,
    step: int,
    cfg: ULConfig,
) -> dict[str, float]:
    """One AdamW step on L_stage1 (nats per image / subpixels) with grad clipping and an EMA update.

    Under torchrun each rank computes its equal share of the global batch (same random draws as one process)
    and gradients are averaged with all_reduce, which is what DDP does; the stage-1 loss is not one forward().
    """
    from ulbench import dist

    rank, world_size = dist.world()
    gen = torch.Generator().manual_seed(mix_seed(cfg.seed, step))
    x = to_unit(x_uint8)
    if cfg.hflip:
        flip = torch.rand(x.shape[0], generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    x = x.contiguous(memory_format=torch.channels_last)
    if world_size > 1:
        share = x.shape[0] // world_size
        terms = model.losses(x, gen, part=slice(rank * share, (rank + 1) * share))
    else:
        terms = model.losses(x, gen)
    means = {k: terms[k].mean() for k in LOSS_TERMS}
    if world_size > 1:  # every rank sees the global means, so all stop together on a non-finite value
        logged = dist.all_reduce_arrays({k: v.detach().double().reshape(1).numpy() for k, v in means.items()})
        checked = {k: torch.tensor(float(v[0]) / world_size) for k, v in logged.items()}
    else:
        checked = means
    for name, value in checked.items():
        if not torch.isfinite(value):
            raise FloatingPointError(name, float(value.detach()))
    loss = (
        means["total"] / x[0].numel()
    )  # nats per subpixel: keeps the gradient scale (and clip) resolution-free
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if world_size > 1:
        dist.average_gradients(model)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    if not torch.isfinite(grad_norm):  # stop before a non-finite update reaches the weights (and a checkpoint)
        raise FloatingPointError("grad_norm", float(grad_norm))
    for group in opt.param_groups:
        group["lr"] = lr_at(step, cfg)
    opt.step()
    with torch.no_grad():
        for p_ema, p in zip(ema.parameters(), model.parameters()):
            p_ema.lerp_(p, 1.0 - cfg.ema)
    h, w = x.shape[-2:]
    out = {k: float(v.detach()) for k, v in checked.items()}
    out["bits_per_pixel"] = float(bits_per_pixel(out["prior"], h, w))
    out["grad_norm"] = float(grad_norm)
    return out


@torch.no_grad()
def evaluate(model: UnifiedLatents, data, cfg: ULConfig) -> dict[str, float]:
    """bpp (prior bound, `eval_draws` draws) with standard error and PSNR of sampled reconstructions."""
    n = min(cfg.eval_images, len(data))
    indices = np.arange(n)
    x_uint8, _ = data.get(indices)
    seeds = torch.as_tensor(indices)
    model.eval()
    z_clean, logsnr_e = model.encode_batched(to_unit(x_uint8))
    gen = torch.Generator().manual_seed(mix_seed(cfg.seed, -1))
    z0 = model.noisy_latent(z_clean, logsnr_e, torch.randn(z_clean.shape, generator=gen))
    nats, _ = model.prior_nats(z_clean, logsnr_e, seeds, cfg.eval_draws)
    x_hat = to_uint8(model.decode(z0, logsnr_e, seeds, cfg.decode_steps))
    h, w = x_uint8.shape[-2:]
    return {
        "eval_bits_per_pixel": float(bits_per_pixel(nats.mean(), h, w)),
        "eval_bits_per_pixel_stderr": float(bits_per_pixel(nats.std(ddof=1) / math.sqrt(n), h, w))
        if n > 1
        else 0.0,
        "eval_bits_per_latent_dim": float(bits_per_latent_dim(nats.mean(), z_clean[0].numel())),
        "eval_psnr_db": float(psnr_db(x_uint8, x_hat).mean()),
        "eval_latent_std": float(z_clean.std()),
        "eval_images": n,
    }


_atomic_write = atomic_write  # kept for callers of the old private name


def save_checkpoint(
    run_dir: Path,
    model: UnifiedLatents,
    ema: UnifiedLatents,
    opt: torch.optim.Optimizer,
    step: int,
    cfg: ULConfig,
    num_images: int,
) -> None:
    """Atomically write model, EMA, AdamW state and RNG to safetensors; JSON state goes in its metadata."""
    state = {
        "step": step,
        "config_hash": cfg.config_hash(),
        "rng": {
            "scheme": "each step uses torch.Generator seeded by mix_seed(seed, step); global torch RNG "
            "state saved as tensor rng.torch_cpu",
            "seed": cfg.seed,
        },
        "data_order": {
            "scheme": "epoch permutation seeded by mix_seed(seed, 1e6 + epoch)",
            "seed": cfg.seed,
            "samples_seen": step * cfg.batch_size,
            "epoch": step * cfg.batch_size // num_images,
            "position_in_epoch": step * cfg.batch_size % num_images,
            "num_images": num_images,
        },
    }
    write_checkpoint(run_dir / CHECKPOINT, {"model": model, "ema": ema}, opt, state,
                     extra={"rng.torch_cpu": torch.get_rng_state()})
    _atomic_write(run_dir / STATE_JSON, lambda p: p.write_text(json.dumps(state, indent=2)))


def load_checkpoint(
    run_dir: Path,
    model: UnifiedLatents | None = None,
    ema: UnifiedLatents | None = None,
    opt: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """Restore what is given (model, EMA, optimizer, RNG) from `run_dir`; returns the JSON state."""
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        raise ValueError(f"No checkpoint at {path}; train first (`train_stage1`) or check the run directory.")
    state, get = read_checkpoint(path, {"model": model, "ema": ema}, opt)
    if opt is not None:
        torch.set_rng_state(get("rng.torch_cpu"))
    return state


def _append_log(run_dir: Path, record: dict[str, Any]) -> None:
    with open(run_dir / "log.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")


def _truncate_log(run_dir: Path, step: int) -> None:
    """Keep log records up to `step` (the checkpoint a resumed run restarts from)."""
    log = run_dir / "log.jsonl"
    if log.exists():
        keep = [
            line for line in log.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step
        ]
        _atomic_write(log, lambda p: p.write_text("".join(line + "\n" for line in keep)))


def train_stage1(
    cfg: ULConfig, run_dir: str | Path, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train encoder, prior and decoder on L_prior + c_lf·L_dec (UL-SPEC §5); returns a summary dict."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(cfg.num_threads)
    torch.use_deterministic_algorithms(True)
    try:
        return _train_stage1(cfg, Path(run_dir), resume, progress)
    finally:  # leave the process as we found it
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _train_stage1(cfg: ULConfig, run_dir: Path, resume: bool, progress: bool) -> dict[str, Any]:
    from ulbench import dist
    from ulbench.data import load_dataset

    rank, world_size = dist.world()
    lead = rank == 0  # rank 0 writes config, logs and checkpoints (torchrun)
    if cfg.batch_size % world_size:
        raise ValueError(f"batch_size {cfg.batch_size} must divide by the world size {world_size}")
    with dist.rank_zero_first():
        run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "config.json"
    if resume and config_path.exists():
        saved = ULConfig.from_dict(json.loads(config_path.read_text()))
        if dataclasses.replace(saved, steps=cfg.steps).config_hash() != cfg.config_hash():
            raise ValueError(
                f"resume: {config_path} has config hash {saved.config_hash()}, this run "
                f"{cfg.config_hash()} (only `steps` may change on resume); resume with the saved "
                "config or use a new run_dir."
            )
    elif not resume and (run_dir / CHECKPOINT).exists():
        raise ValueError(
            f"{run_dir} already holds a checkpoint; pass resume=True to continue or pick a new run_dir."
        )
    if lead:
        _atomic_write(config_path, lambda p: p.write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True)))

    data = load_dataset(cfg.data, split="train", resolution=cfg.resolution)
    try:
        eval_data = load_dataset(cfg.data, split="eval", resolution=cfg.resolution)
    except (ValueError, FileNotFoundError):
        eval_data = data
    torch.manual_seed(mix_seed(cfg.seed, 0))  # weight init (a resumed run overwrites it from the checkpoint)
    model = build_stage1(cfg).to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)

    start = 0
    if resume and (run_dir / CHECKPOINT).exists():
        start = load_checkpoint(run_dir, model, ema, opt)["step"]
        if lead:
            _truncate_log(run_dir, start)
    elif resume and lead:
        _truncate_log(run_dir, 0)
    elif lead:
        (run_dir / "log.jsonl").unlink(missing_ok=True)
    dist.barrier()

    bar = None
    if progress and lead:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc=f"UL stage 1 {cfg.config_hash()}", dynamic_ncols=True)
    t0, last_eval, last_ckpt = time.time(), {}, start
    for step in range(start, cfg.steps):
        x_uint8, _ = data.get(batch_indices(step, cfg.batch_size, len(data), cfg.seed))
        model.train()
        try:
            record = train_step(model, ema, opt, x_uint8, step, cfg)
        except FloatingPointError as err:
            term, value = err.args
            raise RuntimeError(
                f"Non-finite loss at step {step}: term {term!r} = {value}. Training stopped; the last good "
                f"checkpoint (step {last_ckpt}) is kept in {run_dir / CHECKPOINT}. Try a lower lr "
                f"(now {cfg.lr}) or a smaller grad_clip."
            ) from None
        done = step + 1
        record = {"step": done, "lr": lr_at(step, cfg), **record}
        if lead and (done % cfg.eval_every == 0 or done == cfg.steps):
            last_eval = evaluate(ema, eval_data, cfg)
            record.update(last_eval)
        if lead:
            _append_log(run_dir, record)
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            if lead:
                save_checkpoint(run_dir, model, ema, opt, done, cfg, len(data))
            last_ckpt = done
        if bar is not None:
            bar.update(1)
            bar.set_postfix(
                bpp=f"{record['bits_per_pixel']:.3f}",
                dec=f"{record['dec']:.0f}",
                psnr=f"{last_eval.get('eval_psnr_db', float('nan')):.1f}",
            )
    if bar is not None:
        bar.close()
    dist.barrier()
    if not lead:
        return {"run_dir": str(run_dir), "steps": cfg.steps, "rank": rank, "config_hash": cfg.config_hash()}
    if not last_eval:  # resumed at the final step: evaluate the saved EMA weights
        last_eval = evaluate(ema, eval_data, cfg)
    bpp = last_eval["eval_bits_per_pixel"]
    collapsed = bpp < COLLAPSE_BPP
    if collapsed:
        msg = (
            f"UL latent collapsed: {bpp:.4f} bpp < {COLLAPSE_BPP} (run {run_dir}); the decoder ignores z₀. "
            f"UL-SPEC §5: use c_lf > 1 (now {cfg.c_lf}) or a larger bias_b (now {cfg.bias_b})."
        )
        warnings.warn(msg, stacklevel=2)
        _append_log(run_dir, {"step": cfg.steps, "event": "collapse_warning", "message": msg})
    return {
        "run_dir": str(run_dir),
        "steps": cfg.steps,
        "resumed_from": start,
        "wall_time_s": time.time() - t0,
        "bits_per_pixel": bpp,
        "bits_per_pixel_stderr": last_eval["eval_bits_per_pixel_stderr"],
        "bits_per_latent_dim": last_eval["eval_bits_per_latent_dim"],
        "psnr_db": last_eval["eval_psnr_db"],
        "collapsed": collapsed,
        "config_hash": cfg.config_hash(),
    }
