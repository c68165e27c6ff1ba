"""Files of a suite run shared by the image and video stages: run directories by hash, done markers, PNG grids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ulbench.config import RunConfig, SuiteConfig, check_run_name, seed_group

DONE = "done.json"  # written last in a run directory: the run is finished and reusable


def run_dir_of(out: Path, suite: SuiteConfig, run: RunConfig) -> Path:
    """Per-run directory named by the run's config hash (reused when the hash matches); always inside `out`."""
    check_run_name(run.name, f"suite {suite.name}")  # also for RunConfigs built in code, not from a suite file
    return out / "runs" / f"{run.name}-{run.config_hash(suite)}"


def save_grid(images, path: Path, nrow: int = 8) -> str:
    """uint8 NCHW images as one PNG grid (written atomically)."""
    import io

    from PIL import Image
    from torchvision.utils import make_grid

    grid = make_grid(images, nrow=nrow, padding=2, pad_value=255).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(buf, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".png.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    return str(path)


def seed_extra(run: RunConfig) -> dict[str, Any]:
    """Which run a training seed belongs to (config.SEED_MARK), so reports average seeds into one row."""
    group, k = seed_group(run.name)
    return {"seed_group": group, "train_seed": k}
