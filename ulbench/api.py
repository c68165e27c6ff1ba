"""The Python API (clean-fid's `compute_fid`, torch-fidelity's `calculate_metrics`): load a space, evaluate it, rows."""

from __future__ import annotations

from typing import Any, Iterable

from ulbench.results import ResultRow


class Results(list):
    """Result rows of one evaluation (a list of ResultRow) with a pandas view."""

    def to_pandas(self) -> Any:
        """One row per (system, metric): value, stderr, n, status, label, proxy, plus run_id and reason."""
        import pandas as pd

        cols = ("system", "metric", "value", "stderr", "n", "status", "label", "proxy", "higher_is_better",
                "reason", "run_id")
        return pd.DataFrame([{c: getattr(r, c) for c in cols} for r in self], columns=list(cols))

    def value(self, metric: str) -> float | None:
        """The value of `metric` (KeyError naming the metrics present when absent)."""
        for r in self:
            if r.metric == metric:
                return r.value
        raise KeyError(f"no row for metric {metric!r}; rows hold {sorted({r.metric for r in self})}")


def _execution(device: str, precision: str, batch_size: int | None, num_workers: int = 0) -> Any:
    from ulbench.device import Execution, autocast

    execution = Execution(device=device, precision=precision, batch_size=batch_size, num_workers=num_workers)
    autocast(execution.torch_device, execution.precision)  # resolves the device; refuses fp16 on CPU
    return execution


def load_space(name: str, device: str = "cpu", precision: str = "fp32", **kwargs: Any) -> Any:
    """A latent space by spec ("pixel", "jpeg-q50", "ul:RUN_DIR", "diffusers:DIR", "pkg.module:factory[:ARG]"),
    checked against the contract and placed on `device`."""
    from ulbench.evaluation import place
    from ulbench.registry import SPACES

    return place(SPACES.build(name, **kwargs), _execution(device, precision, None))


def evaluate(space: Any, data: Any = "embedded", metrics: Iterable[str] = ("rfid", "psnr", "ssim", "bpp"),
             detector: str | Any = "effnet-lite0", device: str = "cpu", batch_size: int = 64, precision: str = "fp32",
             split: str = "eval", resolution: int = 32, limit: int | None = None, seed: int = 0,
             lpips_backbone: str = "pretrained") -> Results:
    """Reconstruct `data` through `space` (a spec or a space object) and measure `metrics`; rows with provenance."""
    from ulbench.data import load_dataset
    from ulbench.data.base import Subset
    from ulbench.evaluation import FRECHET_METRICS, eval_space
    from ulbench.metrics.features import build_detector
    from ulbench.registry import METRICS
    from ulbench.spaces import check_space

    names = [metrics] if isinstance(metrics, str) else list(metrics)
    for m in names:
        METRICS.resolve(m)
    execution = _execution(device, precision, batch_size)
    spec = space if isinstance(space, str) else getattr(space, "name", type(space).__name__)
    obj = None if isinstance(space, str) else check_space(space, "evaluate(space=...)")
    dataset = load_dataset(data, split=split, resolution=resolution) if isinstance(data, str) else data
    dataset = Subset(dataset, limit) if limit else dataset
    det = None
    if any(m in FRECHET_METRICS for m in names):
        det = build_detector(detector, None, execution.torch_device, precision) if isinstance(detector, str) \
            else detector
    rows: list[ResultRow] = eval_space(spec, dataset, names, det, batch_size, seed, lpips_backbone, space=obj,
                                       execution=execution)
    return Results(rows)
