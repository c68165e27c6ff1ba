"""The diffusers autoencoder classes a latent-diffusion user meets, and how each one encodes, decodes and normalises.

One row per class (CLASSES): which submodules form its encoder and decoder (the modules the adapter runs and
fvcore counts), the function from an image in [−1, 1] to the raw latent (and KL posterior log-variance), the
function back, its downsampling factor and latent channels from the config, and its rate. Read off diffusers
0.42 (`models/autoencoders/{autoencoder_kl, autoencoder_dc, autoencoder_tiny, vq_model}.py`):

- AutoencoderKL (LDM KL-VAE; SD 1.x/2.x, SDXL, SD3, FLUX): encoder → quant_conv → (mean ‖ logvar), the
  posterior DiagonalGaussianDistribution (logvar clamped to [−30, 20]); decode: post_quant_conv → decoder.
- AutoencoderDC (DC-AE, Chen et al. 2024): a deterministic encoder / decoder pair, no posterior.
- AutoencoderTiny (TAESD): deterministic; its encoder maps [−1, 1] to [0, 1] itself, its decoder returns [−1, 1].
  `latent_magnitude` / `latent_shift` only pack latents into a byte image in `forward()` (scale_latents /
  unscale_latents); they are not the diffusion normalisation, so the adapter does not apply them.
- VQModel (LDM VQ-regularised): encoder → quant_conv gives the pre-quantisation latent h; decode quantises h to
  the nearest codebook entry, then post_quant_conv → decoder (the quantiser is absorbed into the decoder, LDM §3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch


def _kl_encode(m: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """AutoencoderKL: posterior mean and log-variance (clamped as DiagonalGaussianDistribution does)."""
    h = m.encoder(x)
    moments = h if m.quant_conv is None else m.quant_conv(h)
    mean, logvar = moments.chunk(2, dim=1)
    return mean, logvar.clamp(-30.0, 20.0)


def _kl_decode(m: Any, z: torch.Tensor) -> torch.Tensor:
    """AutoencoderKL: raw latent → image in [−1, 1] (post_quant_conv, decoder)."""
    return m.decoder(z if m.post_quant_conv is None else m.post_quant_conv(z))


def _plain_encode(m: Any, x: torch.Tensor) -> tuple[torch.Tensor, None]:
    """AutoencoderDC / AutoencoderTiny: the encoder's output is the latent."""
    return m.encoder(x), None


def _plain_decode(m: Any, z: torch.Tensor) -> torch.Tensor:
    """AutoencoderDC / AutoencoderTiny: the decoder's output is the image in [−1, 1]."""
    return m.decoder(z)


def _vq_encode(m: Any, x: torch.Tensor) -> tuple[torch.Tensor, None]:
    """VQModel: the pre-quantisation latent h = quant_conv(encoder(x)) (what VQModel.encode returns)."""
    return m.quant_conv(m.encoder(x)), None


def _vq_decode(m: Any, h: torch.Tensor) -> torch.Tensor:
    """VQModel.decode: nearest codebook entry, post_quant_conv, decoder (spatial norm conditions on the codes)."""
    quant, _, _ = m.quantize(h)
    return m.decoder(m.post_quant_conv(quant), quant if m.config.get("norm_type") == "spatial" else None)


def _pow2_levels(key: str) -> Callable[[dict], int]:
    """Downsampling factor 2^(len(config[key]) − 1): one stride-2 stage between consecutive levels."""
    return lambda config: 2 ** (len(config[key]) - 1)


def _tiny_factor(config: dict) -> int:
    """AutoencoderTiny: stride-2 encoder stages; the decoder must upsample by the same factor."""
    down = 2 ** (len(config["encoder_block_out_channels"]) - 1)
    up = int(config.get("upsampling_scaling_factor", 2)) ** (len(config["decoder_block_out_channels"]) - 1)
    if up != down:
        raise ValueError(f"AutoencoderTiny config downsamples by {down} but upsamples by {up}; not an autoencoder")
    return down


@dataclass(frozen=True)
class AEClass:
    """How one diffusers autoencoder class is run as a latent space (see the module docstring)."""

    latent: str  # "posterior" (Gaussian q(z|x), KL rate) | "deterministic" | "vq" (pre-quantisation latent)
    rate: str | None  # SpaceInfo.rate of its own bits: kl | codebook_upper_bound | None (suites fit the UL bound)
    encoder_parts: tuple[str, ...]  # submodules of the encoder side (FLOPs and parameter counts)
    decoder_parts: tuple[str, ...]  # submodules of the decoder side (the VQ codebook included)
    encode: Callable[[Any, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]  # x in [−1, 1] → raw, logvar
    decode: Callable[[Any, torch.Tensor], torch.Tensor]  # raw latent → x in [−1, 1]
    downsample: Callable[[dict], int]  # image side / latent side, from the config
    channels_key: tuple[str, ...] = ("latent_channels",)  # first config key that is set gives latent channels
    latent_note: str = ""  # SpaceInfo.details["latent"]

    def latent_channels(self, config: dict) -> int:
        """Channels of the latent handed to stage 2."""
        return int(next(config[k] for k in self.channels_key if config.get(k) is not None))


CLASSES: dict[str, AEClass] = {
    "AutoencoderKL": AEClass(
        "posterior", "kl", ("encoder", "quant_conv"), ("post_quant_conv", "decoder"), _kl_encode, _kl_decode,
        _pow2_levels("block_out_channels"), latent_note="posterior mean (deterministic)"),
    "AutoencoderDC": AEClass(
        "deterministic", None, ("encoder",), ("decoder",), _plain_encode, _plain_decode,
        _pow2_levels("encoder_block_out_channels"), latent_note="encoder output (deterministic; no posterior)"),
    "AutoencoderTiny": AEClass(
        "deterministic", None, ("encoder",), ("decoder",), _plain_encode, _plain_decode, _tiny_factor,
        latent_note="encoder output (deterministic), the raw TAESD latent; latent_magnitude / latent_shift "
                    "(scale_latents, the byte packing of forward()) are not applied"),
    "VQModel": AEClass(
        "vq", "codebook_upper_bound", ("encoder", "quant_conv"), ("quantize", "post_quant_conv", "decoder"),
        _vq_encode, _vq_decode, _pow2_levels("block_out_channels"), ("vq_embed_dim", "latent_channels"),
        latent_note="pre-quantisation latent quant_conv(encoder(x)) (continuous, what VQModel.encode returns); "
                    "decode quantises it to the nearest codebook entry first (LDM: the quantiser belongs to the "
                    "decoder), so reconstructions are the VQ reconstructions and stage-2 samples snap to codes"),
}
SUPPORTED = tuple(CLASSES)


class PartsNet(torch.nn.Module):
    """Some submodules of a diffusers autoencoder and the function that runs them (adapter path and FLOP count)."""

    def __init__(self, vae: Any, parts: tuple[str, ...], fn: Callable[..., Any]):
        super().__init__()
        for name in parts:
            setattr(self, name, getattr(vae, name))  # None (e.g. use_quant_conv=False) stays a plain attribute
        self.config = dict(vae.config)
        self.fn = fn

    def forward(self, *args: torch.Tensor) -> Any:
        """The class's encode or decode function on these modules."""
        return self.fn(self, *args)


class FlopNet(torch.nn.Module):
    """A PartsNet whose output is one tensor (fvcore traces tensors, not tuples with None): outputs concatenated."""

    def __init__(self, net: PartsNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped network's tensor outputs along channels (KL: mean ‖ logvar)."""
        out = self.net(x)
        return torch.cat([t for t in out if t is not None], 1) if isinstance(out, tuple) else out


def latent_normalisation(config: dict) -> tuple[list[float] | float, list[float] | float, str]:
    """(shift, scale, description) from the config: z = (z_raw − shift) · scale.

    scaling_factor and shift_factor (None → 0) for every class (SD 0.18215, SDXL 0.13025, SD3/FLUX with a
    shift, DC-AE, TAESD 1.0 / 0.0, VQModel as LDMTextToImagePipeline uses it); an AutoencoderKL config with
    per-channel latents_mean / latents_std gets shift = mean, scale = scaling_factor / std (the SDXL pipelines)."""
    scale = float(config.get("scaling_factor") or 1.0)
    mean, std = config.get("latents_mean"), config.get("latents_std")
    if mean is not None and std is not None:
        return ([float(m) for m in mean], [scale / float(s) for s in std],
                "config latents_mean / latents_std and scaling_factor: z = (z_raw - mean) * scaling_factor / std")
    shift = float(config.get("shift_factor") or 0.0)
    return shift, scale, "config scaling_factor and shift_factor: z = (z_raw - shift_factor) * scaling_factor"
