"""SD-VAE baseline: diffusers `AutoencoderKL` as a LatentSpace (Rombach et al. 2022, LDM; UL-SPEC §6).

Latents are normalised inside the adapter, z = (z_raw − shift) · scale: for the Stable Diffusion VAEs
`scale` is the config's `scaling_factor` (0.18215) and `shift` its `shift_factor` (None → 0); for the
in-suite `sd-vae-tiny` they are the per-channel mean and 1/std of posterior-mean latents on the train set.
Weights load only from local files (`local_files_only=True`): a missing download fails within a second
with the command that fetches it, instead of diffusers' ~28 s of retries (ENVIRONMENT.md).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ulbench.device import autocast, check_precision, resolve_device
from ulbench.spaces import SpaceInfo, total_params

HUB_IDS = {"sd-vae-ft-mse": "stabilityai/sd-vae-ft-mse", "sd-vae-ft-ema": "stabilityai/sd-vae-ft-ema"}
TINY_JSON = "sd_vae_tiny.json"  # training config, metrics and latent statistics of an sd-vae-tiny run
BITS_NOTE = ("bits['total'] = the VAE's own KL(q(z|x) || N(0, I)) of the raw posterior, in bits per image "
             "(LDM's rate term): the cost of a posterior sample under bits-back coding. It is NOT a bound on "
             "the information in the deterministic posterior-mean latent used for decoding, which is unbounded.")


def _download_hint(variant: str) -> str:
    """How to get the SD-VAE weights onto an offline machine."""
    hub = HUB_IDS[variant]
    return (f"On a machine with internet run `hf download {hub} --local-dir DIR` (huggingface_hub < 1.0: "
            f"`huggingface-cli download {hub} --local-dir DIR`), copy DIR here and pass `--space {variant}:DIR` "
            f"(Python: load_sd_vae({variant!r}, path=DIR)); or fill the Hugging Face cache (HF_HOME) with the "
            f"same command without --local-dir.")


def sha256_file(path: Path, chunk_bytes: int = 1 << 22) -> str:
    """SHA-256 hex digest of a file (provenance of weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def weights_sha256(folder: Path) -> dict[str, str]:
    """SHA-256 of each safetensors weights file in a diffusers model folder."""
    return {p.name: sha256_file(p) for p in sorted(Path(folder).glob("*.safetensors"))}


def resolve_sd_vae_dir(variant: str, path: str | Path | None = None, cache_dir: str | Path | None = None) -> Path:
    """Local diffusers folder of an SD-VAE: `path`, or the hub snapshot in the HF cache (never the network)."""
    if variant not in HUB_IDS:
        raise ValueError(f"Unknown SD-VAE variant {variant!r}; expected one of {sorted(HUB_IDS)}.")
    if path is None:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            folder = Path(snapshot_download(HUB_IDS[variant], local_files_only=True, cache_dir=cache_dir))
        except (LocalEntryNotFoundError, FileNotFoundError, OSError) as err:
            raise FileNotFoundError(f"{variant}: weights of {HUB_IDS[variant]!r} are not in the local Hugging Face "
                                    f"cache and this suite never downloads them. {_download_hint(variant)}") from err
    else:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"{variant}: {str(folder)!r} is not a directory; expected a diffusers folder "
                                    f"with config.json and diffusion_pytorch_model.safetensors. "
                                    f"{_download_hint(variant)}")
        if not (folder / "config.json").is_file() and (folder / "vae" / "config.json").is_file():
            folder = folder / "vae"  # a full Stable Diffusion pipeline folder
    if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
        found = sorted(p.name for p in folder.iterdir())[:10]
        raise FileNotFoundError(f"{variant}: {str(folder)!r} lacks config.json or a *.safetensors weights file "
                                f"(found {found}; pickled .bin/.ckpt files are not loaded). {_download_hint(variant)}")
    return folder


def load_autoencoder_kl(folder: Path, device: str | torch.device = "cpu") -> Any:
    """diffusers AutoencoderKL from a local folder, safetensors only, in eval mode."""
    config = json.loads((folder / "config.json").read_text())
    if config.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
        raise ValueError(f"{str(folder)!r} holds a {config.get('_class_name')}, expected an AutoencoderKL; "
                         "pass the VAE folder (e.g. the pipeline's vae/ subfolder).")
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(folder), local_files_only=True, use_safetensors=True,
                                        low_cpu_mem_usage=False)  # True needs `accelerate` and only warns without it
    return vae.to(device).eval().requires_grad_(False)


class _EncoderNet(torch.nn.Module):
    """x in [−1, 1] → posterior moments (mean ‖ logvar): encoder + quant_conv, for FLOP counting."""

    def __init__(self, vae: Any):
        super().__init__()
        self.encoder, self.quant_conv = vae.encoder, vae.quant_conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        return h if self.quant_conv is None else self.quant_conv(h)


class _DecoderNet(torch.nn.Module):
    """Raw latents → x in [−1, 1]: post_quant_conv + decoder, for FLOP counting."""

    def __init__(self, vae: Any):
        super().__init__()
        self.post_quant_conv, self.decoder = vae.post_quant_conv, vae.decoder

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z if self.post_quant_conv is None else self.post_quant_conv(z))


def to_unit_range(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float32 [−1, 1] (the SD-VAE input range)."""
    return x_uint8.to(torch.float32) / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [−1, 1] → uint8 by rounding (x + 1) · 127.5 (diffusers' VaeImageProcessor)."""
    return ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def kl_bits_per_image(mean: torch.Tensor, logvar: torch.Tensor) -> np.ndarray:
    """KL(N(mean, e^logvar) ‖ N(0, I)) summed per image, in bits, float64 (Kingma & Welling 2014, eq. 10)."""
    m, lv = mean.to(torch.float64), logvar.to(torch.float64)
    nats = 0.5 * (m.square() + lv.exp() - 1.0 - lv).flatten(1).sum(1)
    return (nats / math.log(2.0)).cpu().numpy()


class SDVAESpace:
    """An AutoencoderKL as a LatentSpace: uint8 NCHW in/out, normalised latents (ARCHITECTURE.md; edm2 encoders).

    The VAE runs on `device` under autocast(`precision`); posterior noise is drawn on CPU generators and moved;
    latents (float32) and images (uint8) come back on the CPU (`*_on_device` keep them on the device)."""

    def __init__(self, vae: Any, name: str, latent_shift: Any, latent_scale: Any, *, normalisation: str,
                 source: str, weights: dict[str, str], sample_posterior: bool = False,
                 resolution: int | None = None, max_batch: int = 32, extra_info: dict[str, Any] | None = None,
                 device: str | torch.device | None = None, precision: str = "fp32"):
        self.vae = vae.eval().requires_grad_(False)
        self.name = name
        channels = int(vae.config.latent_channels)
        self.latent_shift = torch.as_tensor(latent_shift, dtype=torch.float32).expand(channels).reshape(1, -1, 1, 1)
        self.latent_scale = torch.as_tensor(latent_scale, dtype=torch.float32).expand(channels).reshape(1, -1, 1, 1)
        self.normalisation = normalisation
        self.source = source
        self.weights = weights
        self.sample_posterior = sample_posterior  # False: posterior mean (deterministic); True: per-seed sample
        self.resolution = resolution
        self.max_batch = max_batch  # images per forward pass (memory only; results do not depend on it)
        self.extra_info = extra_info or {}
        self.downsample_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.precision = "fp32"
        first = next(vae.parameters(), None)
        self.to(device if device is not None else (first.device if first is not None else "cpu"), precision)

    def to(self, device: str | torch.device, precision: str | None = None) -> "SDVAESpace":
        """Move the VAE and the latent normalisation to `device` (and set the autocast precision); returns self."""
        self.device = resolve_device(device)
        self.precision = check_precision(precision or self.precision)
        self.vae.to(self.device)
        self.latent_shift = self.latent_shift.to(self.device)
        self.latent_scale = self.latent_scale.to(self.device)
        return self

    # --- normalisation (the only place the scaling factor is applied) ---
    def normalise(self, z_raw: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents → normalised latents, (z_raw − shift) · scale."""
        return (z_raw - self.latent_shift) * self.latent_scale

    def denormalise(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents → raw VAE latents, z / scale + shift."""
        return z / self.latent_scale + self.latent_shift

    # --- LatentSpace ---
    def _check(self, x_uint8: torch.Tensor, seeds: torch.Tensor) -> None:
        if x_uint8.dtype != torch.uint8 or x_uint8.ndim != 4 or x_uint8.shape[1] != 3:
            raise ValueError(f"{self.name}: expected uint8 (N, 3, H, W) images, got {x_uint8.dtype} "
                             f"{tuple(x_uint8.shape)}; convert with (x * 255).round().to(torch.uint8).")
        f = self.downsample_factor
        if x_uint8.shape[-1] % f or x_uint8.shape[-2] % f:
            raise ValueError(f"{self.name}: image size {tuple(x_uint8.shape[-2:])} is not divisible by the "
                             f"downsampling factor {f}; crop or resize to a multiple of {f}.")
        if len(seeds) != len(x_uint8):
            raise ValueError(f"{self.name}: got {len(seeds)} seeds for {len(x_uint8)} images; pass one seed per image.")

    @torch.no_grad()
    def _posterior(self, x_uint8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and (clamped) log-variance of the raw latents, in chunks of max_batch."""
        means, logvars = [], []
        for chunk in x_uint8.split(self.max_batch):
            with autocast(self.device, self.precision):
                dist = self.vae.encode(to_unit_range(chunk.to(self.device, non_blocking=True))).latent_dist
            means.append(dist.mean.float())
            logvars.append(dist.logvar.float())
        return torch.cat(means), torch.cat(logvars)

    def _raw_latents(self, mean: torch.Tensor, logvar: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """Posterior mean, or mean + std · ε with ε drawn from each image's own seed."""
        if not self.sample_posterior:
            return mean
        eps = torch.stack([torch.randn(mean.shape[1:], generator=torch.Generator().manual_seed(int(s)))
                           for s in seeds]).to(mean.device, non_blocking=True)  # CPU draws: device-independent
        return mean + (0.5 * logvar).exp() * eps

    def encode_on_device(self, x_uint8: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """`encode` without the copy back: normalised float32 latents on the space's device."""
        self._check(x_uint8, seeds)
        mean, logvar = self._posterior(x_uint8)
        return self.normalise(self._raw_latents(mean, logvar, seeds))

    def encode(self, x_uint8: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW → normalised float32 latents (N, C, H/f, W/f) on the CPU."""
        return self.encode_on_device(x_uint8, seeds).cpu()

    @torch.no_grad()
    def decode_on_device(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents (any device) → uint8 NCHW on the space's device."""
        raw = self.denormalise(z.to(self.device, torch.float32, non_blocking=True))
        out = []
        for chunk in raw.split(self.max_batch):
            with autocast(self.device, self.precision):
                x = self.vae.decode(chunk).sample
            out.append(to_uint8(x.float()))
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, seeds: torch.Tensor | None = None, steps: int | None = None) -> torch.Tensor:
        """Normalised latents → uint8 NCHW on the CPU; the decoder is deterministic, so seeds and steps are unused."""
        return self.decode_on_device(z).cpu()

    def reconstruct(self, x_uint8: torch.Tensor, seeds: torch.Tensor) -> Any:
        """Encode, decode and the VAE's KL rate in bits per image (see BITS_NOTE)."""
        from ulbench.protocols import Reconstruction

        self._check(x_uint8, seeds)
        mean, logvar = self._posterior(x_uint8)
        z = self.normalise(self._raw_latents(mean, logvar, seeds))
        return Reconstruction(x_hat=self.decode_on_device(z).cpu(), bits={"total": kl_bits_per_image(mean, logvar)},
                              z=z.cpu())

    def flop_components(self, resolution: int | None = None) -> list[tuple[str, torch.nn.Module, tuple]]:
        """(name, module, example_inputs) for ulbench.metrics.flops.FlopReport: encoder and decoder, one image."""
        res = resolution or self.resolution or int(self.vae.config.sample_size)
        c, f = int(self.vae.config.latent_channels), self.downsample_factor
        dev = self.device
        return [(f"{self.name}/encoder", _EncoderNet(self.vae), (torch.zeros(1, 3, res, res, device=dev),)),
                (f"{self.name}/decoder", _DecoderNet(self.vae), (torch.zeros(1, c, res // f, res // f, device=dev),))]

    def info(self) -> SpaceInfo:
        """Latent shape, downsampling, parameters, weights hashes, normalisation and bits definition."""
        vae, c, f = self.vae, int(self.vae.config.latent_channels), self.downsample_factor
        params = total_params({"encoder": vae.encoder, "quant_conv": vae.quant_conv, "decoder": vae.decoder,
                               "post_quant_conv": vae.post_quant_conv})
        params = {"encoder": params["encoder"] + params["quant_conv"],
                  "decoder": params["decoder"] + params["post_quant_conv"], "total": params["total"]}
        config = {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}
        from ulbench.results import config_hash

        return SpaceInfo(
            name=self.name, latent_channels=c, downsample_factor=f, params=params, stochastic_decoder=False,
            decoder_evals=1, rate="kl",
            latent_shape=(c, self.resolution // f, self.resolution // f) if self.resolution else None,
            provenance={"class": type(vae).__name__, "config_hash": config_hash(config),
                        "weights_sha256": self.weights, "source": self.source,
                        **({"precision": self.precision} if self.precision != "fp32" else {}), **self.extra_info},
            details={
                "latent_normalisation": {"kind": self.normalisation, "formula": "z = (z_raw - shift) * scale",
                                         "shift": self.latent_shift.flatten().tolist(),
                                         "scale": self.latent_scale.flatten().tolist()},
                "latent": "posterior sample mean + std*eps, eps from each image's seed" if self.sample_posterior
                else "posterior mean (deterministic)",
                "decoder": "deterministic single pass (seeds and steps ignored)",
                "input_range": "uint8 [0, 255] -> [-1, 1] inside the adapter; output rounded back to uint8",
                "bits": BITS_NOTE, "config": config})


def load_sd_vae(variant: str = "sd-vae-ft-mse", path: str | None = None, sample_posterior: bool | str = False,
                cache_dir: str | None = None, device: str | torch.device = "cpu", resolution: int | None = None,
                precision: str = "fp32", execution: Any = None, **_: Any) -> SDVAESpace:
    """Stable Diffusion ft-MSE / ft-EMA VAE from a local folder or the HF cache (Rombach et al. 2022)."""
    if execution is not None:
        device, precision = execution.torch_device, execution.precision
    folder = resolve_sd_vae_dir(variant, path, cache_dir)
    vae = load_autoencoder_kl(folder, resolve_device(device))
    shift = vae.config.get("shift_factor") or 0.0
    return SDVAESpace(vae, variant, shift, float(vae.config.scaling_factor), normalisation="config scaling_factor",
                      source=str(folder.resolve()), weights=weights_sha256(folder),
                      sample_posterior=str(sample_posterior).lower() in ("1", "true", "yes"), resolution=resolution,
                      extra_info={"hub_id": HUB_IDS[variant]}, precision=precision)


def load_sd_vae_tiny(run_dir: str, sample_posterior: bool | str = False, device: str | torch.device = "cpu",
                     precision: str = "fp32", execution: Any = None, **_: Any) -> SDVAESpace:
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
    vae = load_autoencoder_kl(folder, resolve_device(device))
    stats = meta["latent_stats"]
    scale = [1.0 / s for s in stats["std"]]
    return SDVAESpace(vae, f"sd-vae-tiny:{folder}", stats["mean"], scale,
                      normalisation="per-channel mean/std of posterior means on the train set",
                      source=str(folder.resolve()), weights=weights_sha256(folder),
                      sample_posterior=str(sample_posterior).lower() in ("1", "true", "yes"),
                      resolution=meta["train"]["resolution"],
                      extra_info={"training": meta["train"], "objective": meta["objective"],
                                  "train_metrics": meta["metrics"], "latent_stats": stats}, precision=precision)
