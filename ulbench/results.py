"""Result rows with provenance (lm-eval / mteb schema), atomic JSONL files, and comparability checks."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
import subprocess
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator

try:
    import fcntl
except ImportError:  # Windows: an exclusive-create lock file instead (see file_lock)
    fcntl = None

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
        """One strict-JSON line (RFC 8259: no Infinity/NaN tokens; a non-finite value is null, never "ok")."""
        return row_json(asdict(self))


def _finite(obj: Any) -> Any:
    """`obj` with every non-finite float replaced by None (strict JSON has no Infinity/NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _as_float(v: Any) -> float | None:
    """A row's value as float (old rows stored non-finite values as the strings "inf"/"nan"), None if absent."""
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def strict_json(obj: Any, **kwargs: Any) -> str:
    """json.dumps that never writes Infinity/NaN: non-finite floats become null (strict JSON, RFC 8259)."""
    return json.dumps(_finite(obj), allow_nan=False, **kwargs)


def row_json(row: dict[str, Any]) -> str:
    """A result row as one strict-JSON line: a non-finite value or stderr becomes null, and an "ok" row with a
    non-finite value becomes "failed" with the reason (a number nobody can use is not a result)."""
    row = dict(row)
    bad = {k: row[k] for k in ("value", "stderr") if (f := _as_float(row.get(k))) is not None
           and not math.isfinite(f)}
    for k in bad:
        row[k] = None
    if "value" in bad and row.get("status", "ok") == "ok":
        row["status"] = "failed"
        row["reason"] = f"non-finite value ({bad['value']}): not a usable number"
    return strict_json(row, sort_keys=True)


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


def temp_file(folder: str | os.PathLike, prefix: str, suffix: str = ".tmp") -> tuple[int, str]:
    """A new file (fd, path) in `folder` created like open(): mode 0666 masked by the umask (mkstemp's is 0600)."""
    for _ in range(100):
        path = os.path.join(folder, f"{prefix}{secrets.token_hex(6)}{suffix}")
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: no free temporary name for {prefix}*{suffix}")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a file via a temporary sibling and os.replace: readers never see half a file. An existing file keeps
    its mode; a new one gets the umask's (0666 & ~umask), as open() would give it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


LOCK_STALE_S = 600.0  # fallback lock only: a lock file older than this is from a crashed writer


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Exclusive advisory lock for read-modify-write of `path`: flock on a sidecar `.NAME.lock` (released by the
    kernel if the holder dies); where fcntl is missing, an exclusive-create lock file, removed on release."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f".{path.name}.lock")
    if fcntl is not None:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock
        return
    while True:
        try:
            os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - os.stat(lock).st_mtime > LOCK_STALE_S:
                    os.unlink(lock)
                    continue
            time.sleep(0.01)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def append_rows(path: str | os.PathLike, rows: Iterable[ResultRow]) -> Path:
    """Append rows to a JSONL file, safely for many processes at once: under `file_lock`, the old content plus the
    new rows replace the file atomically (a crash leaves the old file or the new one, never half a line)."""
    path = Path(path)
    lines = "".join(r.to_json() + "\n" for r in rows)
    with file_lock(path):
        old = path.read_text() if path.exists() else ""
        if old and not old.endswith("\n"):
            old += "\n"
        atomic_write_text(path, _strict_lines(old) + lines)
    return path


def _strict_lines(text: str) -> str:
    """JSONL text with the rows of old files that hold bare Infinity/NaN tokens rewritten as strict JSON."""
    if "Infinity" not in text and "NaN" not in text:
        return text
    out = []
    for line in text.splitlines(keepends=True):
        if ("Infinity" in line or "NaN" in line) and line.strip():
            try:
                line = row_json(json.loads(line)) + "\n"
            except (json.JSONDecodeError, AttributeError, TypeError):
                pass  # not a row: kept as it is (read_rows names it)
        out.append(line)
    return "".join(out)


def write_rows(path: str | os.PathLike, rows: Iterable[ResultRow | dict[str, Any]]) -> Path:
    """Replace a JSONL file with `rows` (ResultRows or row dicts read back), atomically and under `file_lock`."""
    path = Path(path)
    text = "".join((r.to_json() if isinstance(r, ResultRow) else row_json(r)) + "\n" for r in rows)
    with file_lock(path):
        atomic_write_text(path, text)
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
