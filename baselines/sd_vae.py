"""SD-VAE presets of the diffusers adapter: `sd-vae-ft-mse[:DIR]`, `sd-vae-ft-ema[:DIR]` and `sd-vae-tiny:RUN_DIR`.

The presets are `diffusers:DIR` (baselines/diffusers_space.py) with a name and a download hint: DIR, or the hub
snapshot in the Hugging Face cache when no DIR is given (never the network; `local_files_only=True` fails within
a second with the command that fetches the weights, instead of diffusers' ~28 s of retries, ENVIRONMENT.md).
Provenance records the hub id only when the weights came from that cache snapshot. `sd-vae-tiny` is the small
AutoencoderKL trained in-suite, normalised by the per-channel mean and 1/std of its train-set posterior means.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from baselines.diffusers_folder import load_autoencoder, resolve_model_dir, weights_sha256
from baselines.diffusers_space import DiffusersSpace, load_diffusers_space
from ulbench.device import resolve_device

HUB_IDS = {"sd-vae-ft-mse": "stabilityai/sd-vae-ft-mse", "sd-vae-ft-ema": "stabilityai/sd-vae-ft-ema"}
TINY_JSON = "sd_vae_tiny.json"  # training config, metrics and latent statistics of an sd-vae-tiny run


def _download_hint(variant: str) -> str:
    """How to get the SD-VAE weights onto an offline machine."""
    hub = HUB_IDS[variant]
    return (f"On a machine with internet run `hf download {hub} --local-dir DIR` (huggingface_hub < 1.0: "
            f"`huggingface-cli download {hub} --local-dir DIR`), copy DIR here and pass `--space {variant}:DIR` "
            f"(Python: load_sd_vae({variant!r}, path=DIR)); or fill the Hugging Face cache (HF_HOME) with the "
            f"same command without --local-dir.")


def resolve_sd_vae_dir(variant: str, path: str | Path | None = None, cache_dir: str | Path | None = None) -> Path:
    """Local diffusers folder of an SD-VAE: `path`, or the hub snapshot in the HF cache (never the network)."""
    if variant not in HUB_IDS:
        raise ValueError(f"Unknown SD-VAE variant {variant!r}; expected one of {sorted(HUB_IDS)}.")
    if path is None:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            path = Path(snapshot_download(HUB_IDS[variant], local_files_only=True, cache_dir=cache_dir))
        except (LocalEntryNotFoundError, FileNotFoundError, OSError) as err:
            raise FileNotFoundError(f"{variant}: weights of {HUB_IDS[variant]!r} are not in the local Hugging Face "
                                    f"cache and this suite never downloads them. {_download_hint(variant)}") from err
    try:
        return resolve_model_dir(path, variant)
    except (FileNotFoundError, ValueError) as err:
        raise type(err)(f"{err} {_download_hint(variant)}") from None


def load_sd_vae(variant: str = "sd-vae-ft-mse", path: str | None = None, sample_posterior: bool | str = False,
                cache_dir: str | None = None, device: str | torch.device = "cpu", resolution: int | None = None,
                precision: str = "fp32", execution: Any = None, **_: Any) -> DiffusersSpace:
    """Stable Diffusion ft-MSE / ft-EMA VAE from a local folder or the HF cache (Rombach et al. 2022)."""
    folder = resolve_sd_vae_dir(variant, path, cache_dir)
    return load_diffusers_space(str(folder), sample_posterior, device, resolution, precision, execution,
                                name=variant, extra_info={"preset": variant}, what=variant)


def load_sd_vae_tiny(run_dir: str, sample_posterior: bool | str = False, device: str | torch.device = "cpu",
                     precision: str = "fp32", execution: Any = None, **_: Any) -> DiffusersSpace:
    """The small AutoencoderKL trained in-suite by `baselines.sd_vae_train.train_sd_vae_tiny` (LDM KL-VAE)."""
    if execution is not None:
        device, precision = execution.torch_device, execution.precision
    folder = Path(run_dir).expanduser()
    meta_path = folder / TINY_JSON
    if not meta_path.is_file():
        raise FileNotFoundError(f"sd-vae-tiny: {str(meta_path)!r} not found, so {str(folder)!r} is not a finished "
                                "sd-vae-tiny run. Train one with `python -c \"from baselines.sd_vae_train import "
                                f"train_sd_vae_tiny; train_sd_vae_tiny('{folder}')\"`.")
    meta = json.loads(meta_path.read_text())
    folder = resolve_model_dir(folder, "sd-vae-tiny")
    vae = load_autoencoder(folder, resolve_device(device))
    stats = meta["latent_stats"]
    scale = [1.0 / s for s in stats["std"]]
    return DiffusersSpace(vae, f"sd-vae-tiny:{folder}", stats["mean"], scale,
                          normalisation="per-channel mean/std of posterior means on the train set",
                          source=str(folder.resolve()), weights=weights_sha256(folder),
                          sample_posterior=str(sample_posterior).lower() in ("1", "true", "yes"),
                          resolution=meta["train"]["resolution"],
                          extra_info={"training": meta["train"], "objective": meta["objective"],
                                      "train_metrics": meta["metrics"], "latent_stats": stats}, precision=precision)
