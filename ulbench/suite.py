"""Run a suite: stage 1 (UL / tiny VAE), stage 2 (base model), evaluation, costs; reuse finished work by hash."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ulbench.config import RunConfig, SuiteConfig
from ulbench.metrics.features import metric_label
from ulbench.protocols import NonFiniteOutput
from ulbench.results import ResultRow, atomic_write_text, read_rows, strict_json, write_rows
from ulbench.run_files import DONE, run_dir_of, save_grid, seed_extra

__all__ = ["DONE", "plan", "resolve_detector", "run_dir_of", "run_one", "run_suite", "save_grid"]


def resolve_detector(suite: SuiteConfig) -> SuiteConfig:
    """The suite with eval.detector `video-auto` replaced by the detector it picks here (i3d-tfhub, i3d or
    video-proxy), so run hashes, suite.json and reuse tell a real-FVD run from a proxy one."""
    from ulbench.metrics.fvd import resolve_video_detector

    name = resolve_video_detector(suite.eval.detector, suite.eval.weights)
    return suite if name == suite.eval.detector else replace(suite, eval=replace(suite.eval, detector=name))


def plan(suite: SuiteConfig, out: str | Path) -> list[dict[str, Any]]:
    """What `run_suite` would do for each run: reuse, resume or train, and whether a base model and gFID run
    (for --dry-run; given spaces are built, weights loaded on the CPU, to ask them for a diffusion target)."""
    out, suite = Path(out), resolve_detector(suite)
    rows = []
    for run in suite.runs:
        d = run_dir_of(out, suite, run)
        state = "reuse" if (d / DONE).exists() else ("resume" if d.exists() else "run")
        rows.append({"run": run.name, "system": run.system, "hash": run.config_hash(suite), "action": state,
                     "stage1": run.stage1, "base": run.base, "space": run.space, "stage2": _stage2_plan(suite, run),
                     "dir": str(d)})
    return rows


def _stage2_plan(suite: SuiteConfig, run: RunConfig) -> dict[str, Any]:
    """Whether `run_one` trains a base model and measures gFID (FVD for video runs) for `run`, and why."""
    from ulbench.spaces import diffusion_target

    video = run.system.endswith("-video")
    metric = "fvd" if video else "gfid"
    if metric not in suite.eval.metrics:
        return {"base_model": False, metric: "not requested", "why": f"{metric} is not in eval.metrics"}
    if video:
        return {"base_model": True, metric: "run", "why": "video runs train a video base model on their frames"}
    if run.single_stage:
        return {"base_model": False, metric: "run", "why": "single stage: the space's own prior generates"}
    if run.system in STAGE1_TRAINERS:
        return {"base_model": True, metric: "run", "why": f"{run.system} is trained here with continuous latents"}
    spec = run.space or run.system
    if diffusion_target(_given_space(spec, suite.resolution)) is None:
        return {"base_model": False, metric: "skipped", "why": f"{spec} has no continuous latents for a base model"}
    return {"base_model": True, metric: "run", "why": f"{spec} has continuous latents (diffusion_target)"}


def _given_space(spec: str, resolution: int) -> Any:
    """A space given by its registry spec (pretrained or parameter-free), at the suite's resolution if it takes one."""
    from ulbench.registry import SPACES

    return SPACES.build(spec, **({"resolution": resolution} if _takes_resolution(spec) else {}))


def _ul_config(suite: SuiteConfig, run: RunConfig):
    from ul_models.config import ULConfig

    over = {"data": suite.data, "resolution": suite.resolution, **run.stage1}
    if suite.scale != "tiny":
        over.pop("resolution")
    return ULConfig.preset(suite.scale, **over)


def _train_ul(out: Path, suite: SuiteConfig, run: RunConfig, log: Callable[[str], None], execution: Any):
    """Stage 1 of a UL run: train (or reuse / resume) and load it; (space, spec, samples seen)."""
    from ul_models.space import load_ul_space
    from ul_models.train import CHECKPOINT, train_stage1

    cfg = _ul_config(suite, run)
    d = out / "stage1" / f"ul-{cfg.config_hash()}"
    if not (d / "done.json").exists():
        log(f"[{run.name}] stage 1: UL {cfg.steps} steps -> {d}")
        summary = train_stage1(cfg, d, resume=(d / CHECKPOINT).exists(), progress=True, execution=execution)
        atomic_write_text(d / "done.json", strict_json(summary, default=str))
    return load_ul_space(str(d), steps=suite.eval.decode_steps), f"ul:{d}", cfg.steps * cfg.batch_size


def _train_vae_tiny(out: Path, suite: SuiteConfig, run: RunConfig, log: Callable[[str], None], execution: Any):
    """Stage 1 of an sd-vae-tiny run (LDM KL-VAE, resumable); (space, spec, samples seen)."""
    from baselines.sd_vae import TINY_JSON, load_sd_vae_tiny
    from baselines.sd_vae_train import train_sd_vae_tiny
    from ulbench.results import config_hash

    kw = {"steps": 600, "batch_size": 32, "dataset": suite.data, "resolution": suite.resolution,
          **_vae_overrides(run)}
    d = out / "stage1" / f"sd-vae-tiny-{config_hash(kw)}"
    if not (d / TINY_JSON).exists():
        log(f"[{run.name}] stage 1: sd-vae-tiny {kw['steps']} steps -> {d}")
        train_sd_vae_tiny(str(d), progress=True, execution=execution, **kw)  # resumes an interrupted run
    return load_sd_vae_tiny(str(d)), f"sd-vae-tiny:{d}", kw["steps"] * kw["batch_size"]


STAGE1_TRAINERS = {"ul": _train_ul, "sd-vae-tiny": _train_vae_tiny}  # systems whose stage 1 a suite trains


def _stage1(out: Path, suite: SuiteConfig, run: RunConfig, log: Callable[[str], None],
            execution: Any = None) -> tuple[Any, str, dict]:
    """The run's latent space (trained here, or given by `space:`), its registry spec and its cost facts."""
    from ulbench.costs import macs_per_sample, space_components

    if run.system in STAGE1_TRAINERS:
        space, spec, samples = STAGE1_TRAINERS[run.system](out, suite, run, log, execution)
        d = spec.split(":", 1)[1]
    else:  # a given space (pretrained or parameter-free): its training cost is not ours to count
        spec, samples, d = run.space or run.system, 0, None
        space = _given_space(spec, suite.resolution)
    facts = {"stage1_macs": macs_per_sample(space_components(space, suite.resolution)), "stage1_samples": samples,
             "stage1_dir": d, "stage1_cost": "trained in this suite" if samples else "given space: not counted"}
    return space, spec, facts


def _takes_resolution(spec: str) -> bool:
    """Whether the space factory of `spec` accepts a `resolution` keyword (to fix its latent shape)."""
    from ulbench.registry import SPACES
    from ulbench.spaces import accepts

    return not accepts(SPACES.factory(spec), ("resolution",))


def _vae_overrides(run: RunConfig) -> dict[str, Any]:
    """The run's stage-1 keys that `train_sd_vae_tiny` takes; UL-only keys (shared suite defaults) are dropped."""
    import dataclasses
    import inspect

    from baselines.sd_vae_train import train_sd_vae_tiny
    from ul_models.config import ULConfig

    accepted = set(inspect.signature(train_sd_vae_tiny).parameters) - {"run_dir", "progress", "overwrite",
                                                                        "execution"}
    ul_only = {f.name for f in dataclasses.fields(ULConfig)} - accepted
    bad = set(run.stage1) - accepted - ul_only
    if bad:
        raise ValueError(f"run {run.name}: sd-vae-tiny stage1 keys {sorted(bad)} are unknown; "
                         f"expected some of {sorted(accepted)}")
    return {k: v for k, v in run.stage1.items() if k in accepted}


def _stage2(out: Path, suite: SuiteConfig, run: RunConfig, space: Any, spec: str,
            log: Callable[[str], None], execution: Any = None, steps: int | None = None,
            warm_from: Path | None = None) -> tuple[Any, dict]:
    """Train (or reuse) the base model on the space's latents; single-stage uses the space's own prior.
    `steps` stops it early (a point of the cost-quality curve); `warm_from` is the finished run of an earlier point,
    whose checkpoint it resumes (exact resume: the same weights as one run straight through)."""
    from ul_models.base import BASE_CONFIG, BaseConfig, BaseGenerator, PriorGenerator, train_base
    from ulbench.costs import base_components, macs_per_sample, space_components

    ev = suite.eval
    if run.single_stage:
        gen = PriorGenerator(space, steps=ev.sample_steps, decode_steps=ev.decode_steps)
        prior_macs = macs_per_sample({k: v for k, v in space_components(space, suite.resolution).items()
                                      if k == "prior"}).get("prior", 0)
        return gen, {"base_macs": {}, "base_samples": 0, "sample_macs_base": prior_macs, "encode_images": 0}
    from ulbench.flops_report import BASE_CHANNELS

    base_kw = {"channels": BASE_CHANNELS[suite.scale], **run.base}
    if "channels" in base_kw:
        base_kw["channels"] = tuple(base_kw["channels"])
    cfg = BaseConfig(space=spec, data=suite.data, resolution=suite.resolution, **base_kw)
    if steps is not None:
        cfg = dataclasses.replace(cfg, steps=steps)
    d = out / "base" / f"{run.system}-{cfg.config_hash()}"
    if warm_from is not None and not d.exists():
        shutil.copytree(warm_from, d, ignore=shutil.ignore_patterns("done.json"))
    if not (d / "done.json").exists():
        log(f"[{run.name}] stage 2: base model {cfg.steps} steps on {spec} -> {d}")
        summary = train_base(cfg, d, resume=True, progress=True, space=space, execution=execution)
        atomic_write_text(d / "done.json", strict_json(summary, default=str))
    gen = BaseGenerator(d, space=space, steps=ev.sample_steps, decode_steps=ev.decode_steps)
    macs = macs_per_sample(base_components(gen))
    encoded = json.loads((d / BASE_CONFIG).read_text()).get("encoded_images", 0)
    return gen, {"base_macs": macs, "base_samples": cfg.steps * cfg.batch_size, "base_dir": str(d),
                 "base_steps": cfg.steps, "base_batch": cfg.batch_size,
                 "sample_macs_base": macs.get("base", 0), "encode_images": encoded}


def _bounded(out: Path, suite: SuiteConfig, run: RunConfig, space: Any, spec: str, log: Callable[[str], None],
             execution: Any = None):
    """The space with a "ul_bound" bits variant: a UL prior fitted to its normalised train latents (UL-SPEC §3);
    spaces whose own rate is a UL bound, or without continuous latents, are returned as they are."""
    from ulbench.spaces import space_info

    info = space_info(space)
    if info.rate == "ul_bound" or info.latent_channels is None or "bpp" not in suite.eval.metrics \
            or not run.bound.get("steps"):
        return space
    from ul_models.latent_bound import BoundConfig, bound_for_space
    from ulbench.data import load_dataset
    from ulbench.results import config_hash

    cfg = BoundConfig(**{k: tuple(v) if k == "channels" else v for k, v in run.bound.items()})
    key = config_hash({"space": spec, "data": suite.data, "res": suite.resolution, "bound": asdict(cfg)})
    d = out / "bound" / f"{run.name}-{key}"
    train = load_dataset(suite.data, split="train", resolution=suite.resolution)
    log(f"[{run.name}] UL bound: a latent prior ({cfg.steps} steps) on {len(train)} train latents -> {d}")
    return bound_for_space(space, train, cfg, d, suite.eval.seed, progress=True, execution=execution)


def run_one(out: Path, suite: SuiteConfig, run: RunConfig, detector: Any, log: Callable[[str], None],
            execution: Any = None) -> list[ResultRow]:
    """Stage 1, stage 2 and all metrics of one run; rows carry the run's provenance and costs."""
    from ulbench.costs import cost_summary
    from ulbench.data import load_dataset
    from ulbench.data.base import Subset
    from ulbench.evaluation import eval_generator, eval_space, place
    from ulbench.spaces import diffusion_target, space_info

    ev = suite.eval
    if run.system.endswith("-video"):
        from ulbench.video_suite import run_video_run

        return run_video_run(out, suite, run, detector, log, execution)
    t0 = time.perf_counter()
    space, spec, s1 = _stage1(out, suite, run, log, execution)
    t1 = time.perf_counter()
    recon = [m for m in ev.metrics if m != "gfid"]
    data = load_dataset(suite.data, split=ev.split, resolution=suite.resolution)
    data = Subset(data, ev.num_eval) if ev.num_eval else data
    log(f"[{run.name}] evaluating reconstructions ({len(data)} images): {', '.join(recon)}")
    measured = _bounded(out, suite, run, space, spec, log, execution)
    rows = eval_space(spec, data, recon, detector, ev.batch_size, ev.seed, ev.lpips_backbone, space=measured,
                      progress=True, execution=execution)
    import torch

    from ulbench.harness import per_index_seeds

    d = run_dir_of(out, suite, run)
    idx = np.linspace(0, len(data) - 1, 8).astype(np.int64)  # spread over the source photos
    x8, _ = data.get(idx)
    grids = {}
    try:
        with torch.inference_mode():
            x8_hat = space.reconstruct(x8, per_index_seeds(idx, ev.seed)).x_hat
        grids["reconstructions (top: input, bottom: output)"] = save_grid(torch.cat([x8, x8_hat]), d / "recon.png")
    except NonFiniteOutput as e:  # the rows already say "failed" with this reason; no grid of garbage pixels
        log(f"[{run.name}] no reconstruction grid: {e}")
    gen_facts: dict[str, Any] = {"base_macs": {}, "base_samples": 0, "sample_macs_base": 0, "encode_images": 0}
    t2 = time.perf_counter()
    if "gfid" in ev.metrics:
        if run.single_stage or diffusion_target(space) is not None:
            gen, gen_facts = _stage2(out, suite, run, space, spec, log, execution)
            log(f"[{run.name}] generating {ev.num_gen} samples for {metric_label('gfid', detector)}")
            train = load_dataset(suite.data, split="train", resolution=suite.resolution)
            place(gen, execution)
            rows += eval_generator(gen, train, detector, ev.num_gen, ev.batch_size, ev.seed, progress=True,
                                   execution=execution,
                                   system=getattr(space, "name", spec))
            try:
                with torch.inference_mode():
                    samples = gen.sample(per_index_seeds(torch.arange(16).numpy(), ev.seed + 1))
                grids["generations"] = save_grid(samples, d / "samples.png")
            except NonFiniteOutput as e:
                log(f"[{run.name}] no sample grid: {e}")
            if ev.curve_points > 1 and not run.single_stage:
                rows += _gfid_curve(out, suite, run, space, spec, s1, gen_facts, detector, train, log, execution)
        else:
            rows.append(ResultRow(run_id=rows[0].run_id, system=rows[0].system, metric="gfid", value=None,
                                  status="skipped", reason=f"{spec} has no continuous latents for a base model",
                                  label=metric_label("gfid", detector), provenance=dict(rows[0].provenance)))
    rows += latent_dim_rows(rows, space_info(space), suite.resolution, run)
    t3 = time.perf_counter()
    dec = s1["stage1_macs"].get("decoder", 0) * max(1, space_info(space).decoder_evals)
    costs = cost_summary(s1["stage1_macs"], s1["stage1_samples"], gen_facts["base_macs"], gen_facts["base_samples"],
                         encode_images=gen_facts["encode_images"],
                         sample_macs=gen_facts["sample_macs_base"] * ev.sample_steps + dec)
    costs["stage1_cost"] = s1["stage1_cost"]
    timing = {"stage1_and_load_s": round(t1 - t0, 1), "recon_eval_s": round(t2 - t1, 1),
              "stage2_and_gen_s": round(t3 - t2, 1)}
    base_prov = dict(rows[0].provenance)
    for metric, value, label in (("train_flops", costs["train_macs"], "train FLOPs (fvcore: MACs)"),
                                 ("sample_flops", costs["sample_macs"], "sample FLOPs/img (fvcore: MACs)")):
        rows.append(ResultRow(run_id=rows[0].run_id, system=rows[0].system, metric=metric, value=value,
                              n=1, label=label,
                              extra={k: v for k, v in costs.items() if k != "convention"}, provenance=base_prov))
    for r in rows:
        r.system = run.name
        r.extra = {**r.extra, "run_label": run.label or run.name, "system_kind": run.system, "paper": run.paper,
                   "timing": timing, "grids": grids, **seed_extra(run)}
        r.provenance = {**r.provenance, "suite": suite.name, "run": run.name, "scale": suite.scale,
                        "run_config": asdict(run), "run_config_hash": run.config_hash(suite)}
    return rows


def _gfid_curve(out: Path, suite: SuiteConfig, run: RunConfig, space: Any, spec: str, s1: dict, final: dict,
                detector: Any, train: Any, log: Callable[[str], None], execution: Any) -> list[ResultRow]:
    """gFID at `eval.curve_points` points along stage-2 training against cumulative training FLOPs (stage 1
    included): one "gfid_curve" row per point, the last being the run's own base model (issue 14, paper Fig. 1)."""
    from ulbench.costs import cost_summary
    from ulbench.evaluation import eval_generator, place

    ev, k = suite.eval, suite.eval.curve_points
    total, batch = final["base_steps"], final["base_batch"]
    points = sorted({max(1, round(total * i / k)) for i in range(1, k + 1)})
    rows, prev = [], None
    for steps in points:
        gen, facts = _stage2(out, suite, run, space, spec, log, execution, steps=steps, warm_from=prev)
        prev = Path(facts["base_dir"])
        log(f"[{run.name}] cost-quality point: base step {steps}/{total}, {ev.num_gen} samples")
        place(gen, execution)
        (row,) = [r for r in eval_generator(gen, train, detector, ev.num_gen, ev.batch_size, ev.seed,
                                            execution=execution, system=run.name) if r.metric == "gfid"]
        macs = cost_summary(s1["stage1_macs"], s1["stage1_samples"], facts["base_macs"], steps * batch,
                            encode_images=facts["encode_images"])["train_macs"]
        rows.append(dataclasses.replace(row, metric="gfid_curve", label=row.label + " along training",
                                        extra={**row.extra, "base_steps": steps, "train_macs": macs}))
    return rows


def latent_dim_rows(rows: list[ResultRow], info: Any, resolution: int, run: RunConfig) -> list[ResultRow]:
    """Bits per latent dimension of the comparable rate (UL bound, else the space's own bits), beside the capacity
    of the noisy channel at unit latent variance, ½·log2(1 + e^λ₀) bits/dim (UL-SPEC §2-3; issue 14)."""
    import dataclasses
    import math

    if info.latent_channels is None:
        return []
    by_metric = {r.metric: r for r in rows if r.status == "ok" and r.value is not None}
    rate = by_metric.get("bpp_ul_bound") or (by_metric.get("bpp") if info.rate == "ul_bound" else None)
    if rate is None:
        return []
    dims = info.latent_channels * (resolution // info.downsample_factor) ** 2
    scale = resolution * resolution / dims
    lambda0 = float((run.stage1 if info.rate == "ul_bound" else run.bound).get("lambda0", 5.0))
    capacity = 0.5 * math.log2(1 + math.exp(lambda0))
    return [dataclasses.replace(
        rate, metric="bits_per_latent_dim", value=rate.value * scale,
        stderr=None if rate.stderr is None else rate.stderr * scale, label="bits/latent dim", warnings=[],
        extra={**rate.extra, "latent_dims": dims, "lambda0": lambda0, "capacity_bits_per_dim_unit_var": capacity,
               "from": rate.metric})]


def run_suite(suite: SuiteConfig, out: str | Path, overwrite: bool = False,
              log: Callable[[str], None] = print, execution: Any = None) -> list[dict[str, Any]]:
    """Run every run of a suite (reusing finished ones by config hash) and gather rows in out/results.jsonl."""
    from ulbench.metrics.features import build_detector

    out, suite = Path(out), resolve_detector(suite)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "suite.json", strict_json(asdict(suite), indent=1, default=str))
    device, precision = (execution.torch_device, execution.precision) if execution else ("cpu", "fp32")
    detector = build_detector(suite.eval.detector, suite.eval.weights, device=device, precision=precision)
    t0 = time.perf_counter()
    for run in suite.runs:
        d = run_dir_of(out, suite, run)
        if (d / DONE).exists() and not overwrite:
            log(f"[{run.name}] reusing finished run {d.name}")
            continue
        rows = run_one(out, suite, run, detector, log, execution)
        d.mkdir(parents=True, exist_ok=True)
        write_rows(d / "results.jsonl", rows)  # replaces a stale file at once (no unlink-then-append window)
        atomic_write_text(d / DONE, json.dumps({"run": run.name, "hash": run.config_hash(suite)}))
    all_rows = read_rows([run_dir_of(out, suite, r) / "results.jsonl" for r in suite.runs])
    write_rows(out / "results.jsonl", all_rows)
    log(f"suite {suite.name}: {len(suite.runs)} runs in {time.perf_counter() - t0:.0f} s -> {out / 'results.jsonl'}")
    return all_rows
