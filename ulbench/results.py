"""Result rows with provenance (lm-eval / mteb schema), atomic JSONL files, and comparability checks."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

# Provenance fields that must be equal for two numbers of the same metric to be set side by side.
COMPARABLE_FIELDS = ("dataset", "dataset_fingerprint", "split", "resolution", "n", "detector",
                     "detector_weights_sha256", "resize", "reference", "lpips_backbone", "decode_steps_policy",
                     "detector_precision")
# Version of the row layout: 2 added ulbench_version, schema_version and dataset_fingerprint to provenance; rows
# without schema_version are version 1 and read the same way (absent fields are None).
SCHEMA_VERSION = 2
PACKAGES = ("torch", "torchvision", "numpy", "scipy", "torch-fidelity", "clean-fid", "scikit-image", "lpips",
            "diffusers", "pillow")


@dataclass
class ResultRow:
    """One (run, system, metric) number and everything that produced it."""

    run_id: str
    system: str
    metric: str
    value: float | None
    stderr: float | None = None
    n: int = 0
    higher_is_better: bool = False
    status: str = "ok"  # ok | skipped | failed
    reason: str | None = None
    label: str = ""
    proxy: bool = False
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """One JSON line (non-finite floats become strings "inf"/"nan" so any JSON reader can load it)."""
        return json.dumps(_finite(asdict(self)), sort_keys=True)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def config_hash(config: dict[str, Any]) -> str:
    """First 12 hex digits of sha256 over canonical JSON of a config."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


@lru_cache(maxsize=1)
def git_sha() -> str:
    """The git commit of the ulbench checkout (with "+dirty" if modified), or "unknown"."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (sha + ("+dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def schema_version(row: dict[str, Any]) -> int:
    """The row layout version of a result row read from JSON (1 for rows written before it was recorded)."""
    return int(row.get("provenance", {}).get("schema_version", 1))


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    """Versions of the packages a number depends on."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a file via a temporary sibling and os.replace: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_rows(path: str | os.PathLike, rows: Iterable[ResultRow]) -> Path:
    """Append rows to a JSONL file atomically (the old content plus the new rows replace the file at once)."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    atomic_write_text(path, old + "".join(r.to_json() + "\n" for r in rows))
    return path


def read_rows(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Rows from JSONL files or directories of them (`results.jsonl` under a run directory)."""
    rows = []
    for p in paths:
        p = Path(p)
        files = sorted(p.rglob("*.jsonl")) if p.is_dir() else [p]
        if not files or not all(f.is_file() for f in files):
            raise ValueError(f"{p}: no result files (expected a .jsonl file or a directory containing them)")
        for f in files:
            for i, line in enumerate(f.read_text().splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{f}:{i}: not a JSON result row ({e})") from e
    return rows


def rows_frame(rows: list[dict[str, Any]]):
    """Rows as a pandas DataFrame with provenance flattened into `prov.*` columns."""
    import pandas as pd

    flat = []
    for r in rows:
        d = {k: v for k, v in r.items() if k not in ("provenance", "extra")}
        d.update({f"prov.{k}": (json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v)
                  for k, v in r.get("provenance", {}).items()})
        for k in ("value", "stderr"):
            if isinstance(d.get(k), str):
                d[k] = float(d[k])
        flat.append(d)
    return pd.DataFrame(flat)


def provenance_conflicts(rows: list[dict[str, Any]]) -> dict[str, dict[str, set]]:
    """Per metric, the comparable provenance fields whose values differ between rows (empty: comparable)."""
    by_metric: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("status", "ok") == "ok":
            by_metric.setdefault(r["metric"], []).append(r)
    conflicts: dict[str, dict[str, set]] = {}
    for metric, group in by_metric.items():
        for f in COMPARABLE_FIELDS:
            values = {json.dumps(r.get("provenance", {}).get(f), sort_keys=True) for r in group}
            if len(values) > 1:
                conflicts.setdefault(metric, {})[f] = values
    return conflicts
