"""`diffusers:DIR`: any diffusers autoencoder a latent-diffusion user meets, as one LatentSpace (LDM; UL-SPEC §6).

AutoencoderKL (SD 1.x/2.x, SDXL, SD3, FLUX), AutoencoderDC, AutoencoderTiny and VQModel (baselines/diffusers_classes.py
says how each runs). Latents are normalised here and nowhere else, z = (z_raw − shift) · scale, from the config
(or from statistics the caller measured, e.g. sd-vae-tiny). Weights load from local safetensors only; provenance
records the class, a hash of the config, the sha256 of each weights file and the folder, and a hub id only when
the folder is a snapshot in the Hugging Face cache (models--ORG--NAME/snapshots/REV).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from baselines.diffusers_classes import CLASSES, SUPPORTED, FlopNet, PartsNet, latent_normalisation
from baselines.diffusers_folder import hub_snapshot_of, load_autoencoder, resolve_model_dir, weights_sha256
from ulbench.device import autocast, check_precision, resolve_device
from ulbench.protocols import require_finite
from ulbench.spaces import SpaceInfo

BITS_NOTE = ("bits['total'] = the VAE's own KL(q(z|x) || N(0, I)) of the raw posterior, in bits per image "
             "(LDM's rate term): the cost of a posterior sample under bits-back coding. It is NOT a bound on "
             "the information in the deterministic posterior-mean latent used for decoding, which is unbounded.")
VQ_BITS_NOTE = ("bits['total'] = tokens x log2(K) per image (latent positions x log2 of the codebook size): the "
                "cost of the code indices with a uniform code, an upper bound on what an entropy coder needs.")


def to_unit_range(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float32 [−1, 1] (the diffusers autoencoders' input range)."""
    return x_uint8.to(torch.float32) / 127.5 - 1.0


def to_uint8(x: torch.Tensor, source: str = "autoencoder decoder") -> torch.Tensor:
    """float [−1, 1] → uint8 by rounding (x + 1) · 127.5 (diffusers' VaeImageProcessor); NaN/inf is
    NonFiniteOutput naming `source` (ulbench.protocols.require_finite)."""
    x = require_finite(x, source)
    return ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def kl_bits_per_image(mean: torch.Tensor, logvar: torch.Tensor) -> np.ndarray:
    """KL(N(mean, e^logvar) ‖ N(0, I)) summed per image, in bits, float64 (Kingma & Welling 2014, eq. 10)."""
    m, lv = mean.to(torch.float64), logvar.to(torch.float64)
    nats = 0.5 * (m.square() + lv.exp() - 1.0 - lv).flatten(1).sum(1)
    return (nats / math.log(2.0)).cpu().numpy()


class DiffusersSpace:
    """A diffusers autoencoder as a LatentSpace: uint8 NCHW in/out, normalised float32 latents (ARCHITECTURE.md).

    The networks run on `device` under autocast(`precision`) in fixed-size micro-batches (the last one padded),
    so every image's latent and reconstruction are independent of the batch it came in; posterior noise (KL,
    `sample_posterior`) is drawn from each image's seed on the CPU. Latents and images come back on the CPU
    (`*_on_device` keep them on the device)."""

    def __init__(self, vae: Any, name: str, latent_shift: Any = None, latent_scale: Any = None, *,
                 normalisation: str | None = None, source: str, weights: dict[str, str],
                 sample_posterior: bool = False, resolution: int | None = None, micro_batch: int = 8,
                 extra_info: dict[str, Any] | None = None, device: str | torch.device | None = None,
                 precision: str = "fp32"):
        kind_name = type(vae).__name__
        if kind_name not in CLASSES:
            raise ValueError(f"{name}: a {kind_name} is not an autoencoder this adapter runs; {', '.join(SUPPORTED)}")
        self.kind, self.class_name = CLASSES[kind_name], kind_name
        self.vae = vae.eval().requires_grad_(False)
        self.name = name
        config = dict(vae.config)
        if latent_shift is None or latent_scale is None:
            latent_shift, latent_scale, normalisation = latent_normalisation(config)
        self.latent_channels = self.kind.latent_channels(config)
        self.downsample_factor = self.kind.downsample(config)
        shape = (1, self.latent_channels, 1, 1)
        self.latent_shift = torch.as_tensor(latent_shift, dtype=torch.float32).expand(shape[1]).reshape(shape)
        self.latent_scale = torch.as_tensor(latent_scale, dtype=torch.float32).expand(shape[1]).reshape(shape)
        self.normalisation = normalisation or "given"
        self.source, self.weights = source, weights
        if sample_posterior and self.kind.latent != "posterior":
            raise ValueError(f"{name}: sample_posterior needs a posterior (AutoencoderKL); a {kind_name} is "
                             "deterministic")
        self.sample_posterior = sample_posterior  # False: posterior mean (deterministic); True: per-seed sample
        self.resolution = resolution
        self.micro_batch = micro_batch  # images per forward pass (memory only; results do not depend on it)
        self.extra_info = extra_info or {}
        self.encoder = PartsNet(vae, self.kind.encoder_parts, self.kind.encode)
        self.decoder = PartsNet(vae, self.kind.decoder_parts, self.kind.decode)
        self.precision = "fp32"
        first = next(vae.parameters(), None)
        self.to(device if device is not None else (first.device if first is not None else "cpu"), precision)

    def to(self, device: str | torch.device, precision: str | None = None) -> "DiffusersSpace":
        """Move the autoencoder and the latent normalisation to `device` (and set the autocast precision)."""
        self.device = resolve_device(device)
        self.precision = check_precision(precision or self.precision)
        self.vae.to(self.device)
        self.latent_shift = self.latent_shift.to(self.device)
        self.latent_scale = self.latent_scale.to(self.device)
        return self

    # --- normalisation (the only place the scaling factor is applied) ---
    def normalise(self, z_raw: torch.Tensor) -> torch.Tensor:
        """Raw latents → normalised latents, (z_raw − shift) · scale."""
        return (z_raw - self.latent_shift) * self.latent_scale

    def denormalise(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents → raw latents, z / scale + shift."""
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
    def _encode_raw(self, x_uint8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw latents (KL: posterior mean) and the KL log-variance (else None), float32 on the device."""
        from ul_models.sampler import map_microbatches

        def enc(x: torch.Tensor) -> torch.Tensor:
            with autocast(self.device, self.precision):
                out = self.encoder(to_unit_range(x.to(self.device, non_blocking=True)))
            return torch.cat([t.float() for t in out if t is not None], 1)

        out = map_microbatches(enc, [x_uint8], self.micro_batch)
        if self.kind.latent != "posterior":
            return out, None
        return out.chunk(2, dim=1)

    def _latents(self, mean: torch.Tensor, logvar: torch.Tensor | None, seeds: torch.Tensor) -> torch.Tensor:
        """Normalised latents: the raw latent, or (KL, sample_posterior) mean + std · ε with ε from each seed."""
        if self.sample_posterior:
            eps = torch.stack([torch.randn(mean.shape[1:], generator=torch.Generator().manual_seed(int(s)))
                               for s in seeds]).to(mean.device, non_blocking=True)  # CPU draws: device-independent
            mean = mean + (0.5 * logvar).exp() * eps
        return self.normalise(mean)

    def encode_on_device(self, x_uint8: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """`encode` without the copy back: normalised float32 latents on the space's device."""
        self._check(x_uint8, seeds)
        return self._latents(*self._encode_raw(x_uint8), seeds)

    def encode(self, x_uint8: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW → normalised float32 latents (N, C, H/f, W/f) on the CPU."""
        return self.encode_on_device(x_uint8, seeds).cpu()

    @torch.no_grad()
    def decode_on_device(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents (any device) → uint8 NCHW on the space's device."""
        from ul_models.sampler import map_microbatches

        def dec(raw: torch.Tensor) -> torch.Tensor:
            with autocast(self.device, self.precision):
                return to_uint8(self.decoder(raw).float(), f"decoder of {self.name}")

        return map_microbatches(dec, [self.denormalise(z.to(self.device, torch.float32, non_blocking=True))],
                                self.micro_batch)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, seeds: torch.Tensor | None = None, steps: int | None = None) -> torch.Tensor:
        """Normalised latents → uint8 NCHW on the CPU; the decoder is deterministic, so seeds and steps are unused."""
        return self.decode_on_device(z).cpu()

    def reconstruct(self, x_uint8: torch.Tensor, seeds: torch.Tensor) -> Any:
        """Encode, decode and the class's own bits per image: KL rate, codebook index cost, or none."""
        from ulbench.protocols import Reconstruction

        self._check(x_uint8, seeds)
        mean, logvar = self._encode_raw(x_uint8)
        z = self._latents(mean, logvar, seeds)
        if self.kind.latent == "posterior":
            bits = {"total": kl_bits_per_image(mean, logvar)}
        elif self.kind.latent == "vq":
            bits = {"total": np.full(len(z), self.codebook_bits(z.shape[-2] * z.shape[-1]), dtype=np.float64)}
        else:
            bits = None
        return Reconstruction(x_hat=self.decode_on_device(z).cpu(), bits=bits, z=z.cpu())

    def codebook_bits(self, tokens: int) -> float:
        """VQModel: tokens × log2 K bits for one image (uniform code over the K codebook entries)."""
        return tokens * math.log2(int(self.vae.config.num_vq_embeddings))

    def flop_components(self, resolution: int | None = None) -> list[tuple[str, torch.nn.Module, tuple]]:
        """(name, module, example_inputs) for ulbench.metrics.flops.FlopReport: encoder and decoder, one image."""
        res = resolution or self.resolution or self.vae.config.get("sample_size")
        if not res:
            raise ValueError(f"{self.name}: no resolution to count FLOPs at; pass flop_components(resolution)")
        c, f, dev = self.latent_channels, self.downsample_factor, self.device
        return [(f"{self.name}/encoder", FlopNet(self.encoder), (torch.zeros(1, 3, res, res, device=dev),)),
                (f"{self.name}/decoder", FlopNet(self.decoder), (torch.zeros(1, c, res // f, res // f, device=dev),))]

    def info(self) -> SpaceInfo:
        """Latent shape, downsampling, parameters, provenance (class, config hash, weights sha256), normalisation."""
        from ulbench.results import config_hash
        from ulbench.spaces import total_params

        c, f, kind = self.latent_channels, self.downsample_factor, self.kind
        counts = total_params({"encoder": self.encoder, "decoder": self.decoder})
        params = {**counts, "total": sum(p.numel() for p in self.vae.parameters())}
        config = {k: v for k, v in dict(self.vae.config).items() if not k.startswith("_")}
        details = {
            "latent_normalisation": {"kind": self.normalisation, "formula": "z = (z_raw - shift) * scale",
                                     "shift": self.latent_shift.flatten().tolist(),
                                     "scale": self.latent_scale.flatten().tolist()},
            "latent": "posterior sample mean + std*eps, eps from each image's seed" if self.sample_posterior
            else kind.latent_note,
            "decoder": "deterministic single pass (seeds and steps ignored)",
            "input_range": "uint8 [0, 255] -> [-1, 1] inside the adapter; output rounded back to uint8",
            "bits": {"posterior": BITS_NOTE, "vq": VQ_BITS_NOTE}.get(
                kind.latent, "none of its own (deterministic latents): suites fit the UL bound (bpp_ul_bound)"),
            "config": config}
        if self.class_name == "AutoencoderTiny":
            details["taesd_byte_packing"] = {"latent_magnitude": config.get("latent_magnitude"),
                                             "latent_shift": config.get("latent_shift"), "applied": False}
        return SpaceInfo(
            name=self.name, latent_channels=c, downsample_factor=f, params=params, stochastic_decoder=False,
            decoder_evals=1, rate=kind.rate,
            latent_shape=(c, self.resolution // f, self.resolution // f) if self.resolution else None,
            provenance={"class": self.class_name, "config_hash": config_hash(config),
                        "weights_sha256": self.weights, "source": self.source,
                        **({"precision": self.precision} if self.precision != "fp32" else {}), **self.extra_info},
            details=details)


def load_diffusers_space(path: str, sample_posterior: bool | str = False, device: str | torch.device = "cpu",
                         resolution: int | None = None, precision: str = "fp32", execution: Any = None,
                         name: str | None = None, extra_info: dict[str, Any] | None = None,
                         what: str = "diffusers", **_: Any) -> "DiffusersSpace":
    """`diffusers:DIR`: the autoencoder in DIR (or DIR/vae) with the config's latent normalisation."""
    if execution is not None:
        device, precision = execution.torch_device, execution.precision
    folder = resolve_model_dir(path, what)
    vae = load_autoencoder(folder, resolve_device(device))
    shift, scale, kind = latent_normalisation(dict(vae.config))
    return DiffusersSpace(vae, name or f"diffusers:{path}", shift, scale, normalisation=kind,
                          source=str(folder.resolve()), weights=weights_sha256(folder),
                          sample_posterior=str(sample_posterior).lower() in ("1", "true", "yes"),
                          resolution=resolution, extra_info={**hub_snapshot_of(folder), **(extra_info or {})},
                          precision=precision)
