"""`ulbench run / train / flops / report / check`: suites, training, costs, reports and the CI gate."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ulbench.cli import execution_options, main


@main.command("run")
@click.option("--suite", "suite_name", default="smoke", show_default=True,
              help="smoke | ablations | bitrate | compare | video, or a path to a suite .yaml")
@click.option("--scale", default=None, help="tiny | small | paper (default: the suite's)")
@click.option("--data", default=None, help="embedded | folder:DIR (default: the suite's)")
@click.option("--set", "sets", multiple=True, help="Override, e.g. --set defaults.stage1.steps=300")
@click.option("--out", default=None, help="Output directory (default: results/SUITE)")
@click.option("--overwrite", is_flag=True, help="Redo finished runs instead of reusing them.")
@click.option("--dry-run", is_flag=True, help="Print the resolved suite and what would run.")
@click.option("--seeds", type=click.IntRange(min=1), default=None,
              help="Train every run with N seeds (default: the suite's `seeds:`, else 1); tables give mean ± SE.")
@click.option("--report/--no-report", default=True, show_default=True, help="Render OUT/report.md and .html.")
@execution_options(with_compile=True)
def run_cmd(suite_name, scale, data, sets, out, overwrite, dry_run, seeds, report, execution):
    """Run a suite: train each system (stage 1, stage 2), evaluate, count FLOPs, write rows and a report.

    \b
    Finished runs are reused by config hash; an interrupted suite resumes from its checkpoints.
    Examples:
      ulbench run --suite smoke
      ulbench run --suite ablations --out reports/ablations-run
      ulbench run --suite bitrate --set defaults.stage1.steps=300 --dry-run
      ulbench run --suite ablations --device cuda --precision bf16 --num-workers 4
    """
    from ulbench.config import load_suite
    from ulbench.suite import plan, resolve_detector, run_suite

    suite = resolve_detector(load_suite(suite_name, list(sets) + ([f"seeds={seeds}"] if seeds else []), scale, data))
    out_dir = Path(out or f"results/{suite.name}")
    if dry_run:
        click.echo(json.dumps({"suite": suite.name, "config_hash": suite.config_hash(), "out": str(out_dir),
                               "eval": suite.eval.__dict__, "execution": execution.provenance(),
                               "runs": plan(suite, out_dir)}, indent=1, default=str))
        return
    run_suite(suite, out_dir, overwrite, log=lambda m: click.echo(m, err=True), execution=execution)
    from ulbench.compare import compare_table

    click.echo(compare_table([str(out_dir / "results.jsonl")]))
    if report:
        from ulbench.report import build_report

        md, html = build_report([str(out_dir / "results.jsonl")], str(out_dir / "report"))
        click.echo(f"report: {md} and {html}", err=True)


@main.command("train")
@click.argument("what", type=click.Choice(["ul", "base", "sd-vae-tiny"]))
@click.option("--scale", default="tiny", show_default=True)
@click.option("--space", default=None, help="base only: the latent space, e.g. ul:runs/ul-tiny, pixel")
@click.option("--out", required=True, help="Run directory.")
@click.option("--set", "sets", multiple=True, help="Config override key=value (see --dry-run for keys).")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in --out.")
@click.option("--dry-run", is_flag=True, help="Print the resolved config and exit.")
@execution_options(with_compile=True)
def train_cmd(what, scale, space, out, sets, resume, dry_run, execution):
    """Train UL stage 1, a stage-2 base model, or the tiny SD-VAE.

    \b
    Examples:
      ulbench train ul --scale tiny --out runs/ul-tiny --set c_lf=30
      ulbench train ul --out runs/ul-tiny --resume
      ulbench train base --space ul:runs/ul-tiny --out runs/base-ul --set steps=600
      torchrun --nproc_per_node=2 -m ulbench train ul --out runs/ul-ddp
      ulbench train ul --out runs/ul-gpu --device cuda --precision bf16 --compile --num-workers 4
    """
    import dataclasses

    import yaml

    if what == "ul":
        from ul_models.config import ULConfig
        from ul_models.train import train_stage1
        from ulbench import dist

        cfg = ULConfig.preset(scale).replace_from_strings(list(sets))
        if dry_run:
            click.echo(json.dumps(cfg.to_dict(), indent=1, sort_keys=True))
            return
        rank, _ = dist.init_from_env()
        summary = train_stage1(cfg, out, resume=resume, progress=True, execution=execution)
        if rank != 0:
            return
    elif what == "base":
        from ul_models.base import BaseConfig, train_base

        if not space:
            raise ValueError("train base needs --space (e.g. --space ul:runs/ul-tiny or --space pixel)")
        fields = {f.name for f in dataclasses.fields(BaseConfig)}
        over = {}
        for s in sets:
            k, _, v = s.partition("=")
            if k not in fields:
                raise ValueError(f"unknown base config key {k!r}; known: {', '.join(sorted(fields))}")
            over[k] = yaml.safe_load(v)
        if "channels" in over:
            over["channels"] = tuple(over["channels"])
        cfg = BaseConfig(space=space, **over)
        if dry_run:
            click.echo(json.dumps(dataclasses.asdict(cfg), indent=1))
            return
        if not resume and (Path(out) / "base.safetensors").exists():
            raise ValueError(f"{out} already holds a base checkpoint; pass --resume or pick a new --out")
        from ulbench import dist

        rank, _ = dist.init_from_env()
        summary = train_base(cfg, out, resume=resume, progress=True, execution=execution)
        if rank != 0:
            return
    else:
        from baselines.sd_vae_train import train_sd_vae_tiny

        kw = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in sets)}
        if dry_run:
            click.echo(json.dumps(kw, indent=1))
            return
        summary = train_sd_vae_tiny(out, progress=True, execution=execution, **kw)
    click.echo(json.dumps(summary, indent=1, default=str))


@main.command("flops")
@click.option("--space", "spaces", multiple=True, help="ul | sd-vae | pixel | a registry spec (repeatable)")
@click.option("--scale", default="tiny", show_default=True, help="tiny | small | paper (built on CPU, not trained)")
def flops_cmd(spaces, scale):
    """Parameters and forward GFLOPs per sample of each component (fvcore: 1 multiply-add = 1 FLOP).

    \b
    Examples:
      ulbench flops --scale paper
      ulbench flops --space ul --space sd-vae --scale tiny
    """
    from ulbench.flops_report import flops_table

    click.echo(flops_table(list(spaces) or ["ul", "sd-vae", "pixel"], scale))


@main.command("report")
@click.argument("results", nargs=-1, required=True)
@click.option("--out", required=True, help="Output prefix: writes OUT.md, OUT.html and OUT_files/.")
@click.option("--title", default=None)
@click.option("--notes", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Markdown file of the authors' reading (why each row does or does not reproduce), shown "
                   "after the orderings.")
def report_cmd(results, out, title, notes):
    """Render result rows into Markdown and self-contained HTML (tables, plots, samples, provenance).

    \b
    Example:
      ulbench report results/ablations/results.jsonl --out reports/ablations
    """
    from ulbench.report import build_report

    text = Path(notes).read_text(encoding="utf-8") if notes else None
    md, html = build_report(list(results), out, title, notes=text)
    click.echo(f"{md}\n{html}")


@main.command("check")
@click.argument("results", nargs=-1, required=True)
@click.option("--baseline", required=True, help="Baseline JSON, e.g. reports/baselines/smoke.json")
@click.option("--update", is_flag=True, help="Write the baseline from RESULTS instead of checking.")
def check_cmd(results, baseline, update):
    """CI regression gate: exit 1 when a metric regressed beyond its tolerance, 2 on a protocol mismatch.

    \b
    Example:
      ulbench check results/smoke/results.jsonl --baseline reports/baselines/smoke.json
    """
    from ulbench.check import run_check

    code, text = run_check(list(results), baseline, update)
    click.echo(text, err=code != 0)
    sys.exit(code)


@main.command("prepare")
@click.argument("what", type=click.Choice(["imagenet"]))
@click.option("--src", required=True, help="ImageNet-layout folder (one sub-folder per class).")
@click.option("--out", required=True, help="Output folder (or OUT.zip with --zip).")
@click.option("--resolution", default=512, show_default=True)
@click.option("--workers", default=2, show_default=True, help="Processes.")
@click.option("--zip", "as_zip", is_flag=True, help="Also pack an uncompressed zip with dataset.json.")
def prepare_cmd(what, src, out, resolution, workers, as_zip):
    """ADM centre-crop a dataset into PNGs + dataset.json labels (parallel, resumable, bad files reported).

    \b
    Example:
      ulbench prepare imagenet --src /data/imagenet/train --out /data/in512 --resolution 512 --workers 16
    """
    from ulbench.prepare import prepare_imagenet

    click.echo(json.dumps(prepare_imagenet(src, out, resolution, workers, as_zip), indent=1))


@main.command("cache-latents")
@click.option("--space", required=True, help="A frozen encoder: sd-vae-ft-mse:DIR | ul:RUN_DIR | ...")
@click.option("--data", default="embedded", show_default=True)
@click.option("--split", default="train", show_default=True)
@click.option("--resolution", default=None, type=int,
              help="ADM centre-crop to N×N. Default: 32 for embedded data; a folder keeps its native size.")
@click.option("--out", required=True, help="Folder for shard-*.safetensors and manifest.json")
@click.option("--shard-size", default=1024, show_default=True)
@click.option("--seed", default=0, show_default=True)
@execution_options()
def cache_latents_cmd(space, data, split, resolution, out, shard_size, seed, execution):
    """Encode a dataset once with a frozen encoder into sharded safetensors (resumable; torchrun-aware).

    \b
    Example:
      torchrun --nproc_per_node=8 -m ulbench cache-latents --space sd-vae-ft-mse:/w/sdvae \\
          --data folder:/data/in512 --resolution 512 --out /data/in512-sdvae
    """
    from ulbench import dist
    from ulbench.data import load_dataset
    from ulbench.latent_cache import cache_latents
    from ulbench.registry import SPACES

    rank, world_size = dist.init_from_env()
    manifest = cache_latents(SPACES.build(space), load_dataset(data, split=split, resolution=resolution), out,
                             shard_size, batch_size=execution.batch_size or 64, seed=seed, rank=rank,
                             world_size=world_size, execution=execution)
    if rank == 0:
        click.echo(json.dumps({k: manifest[k] for k in ("num_images", "num_shards", "complete", "key")}))
