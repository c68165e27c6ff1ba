"""The stage-1 Unified Latents model: encoder, latent prior, pixel decoder and losses (UL-SPEC §2-5, §7)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ul_models.config import ULConfig
from ul_models.losses import decoder_loss, estimate_prior_nats, gaussian_kl_nats, prior_loss, stage1_objective
from ul_models.nets import Denoiser, Encoder
from ul_models.sampler import SAMPLER_STREAM, map_microbatches, sample
from ul_models.schedule import Schedule, alpha_sigma, resolution_shift
from ulbench.device import autocast

LAMBDA_E_MARGIN = (
    0.5  # learned variance: λ_e stays in [λ_min + margin, λ₀] so each element's schedule is non-empty
)


class UnifiedLatents(nn.Module):
    """Encoder E, prior p(z₀) (latent diffusion from λ₀), decoder p(x|z₀) (pixel diffusion), UL-SPEC §2-5."""

    def __init__(
        self,
        encoder: Encoder,
        prior: Denoiser,
        decoder: Denoiser,
        prior_schedule: Schedule,
        pixel_schedule: Schedule,
        downsample_factor: int,
        latent_channels: int,
        c_lf: float = 10.0,
        bias_b: float = 0.0,
        separate_prior: bool = False,
        learned_variance: bool = False,
        separate_prior_rate: str = "none",
    ):
        super().__init__()
        self.encoder, self.prior, self.decoder = encoder, prior, decoder
        self.prior_schedule = prior_schedule  # λ from λ₀ (t=0) to λ_min (t=1), unit weight
        self.pixel_schedule = pixel_schedule  # λ from λ_max,x to λ_min,x (resolution-shifted cosine)
        self.downsample_factor = downsample_factor  # f
        self.latent_channels = latent_channels  # C
        self.c_lf = c_lf  # loss factor on L_dec (§5)
        self.bias_b = bias_b  # sigmoid bias b (§4)
        self.separate_prior = separate_prior  # §7: stop-gradient latents into the prior
        self.separate_prior_rate = separate_prior_rate  # reading (b): a Gaussian KL rate on the encoder instead
        self.learned_variance = learned_variance  # §7: per-element λ_e ≤ λ₀

    @property
    def lambda0(self) -> float:
        """λ₀, the fixed encoder noise level and the prior's minimum noise (UL-SPEC §2)."""
        return self.prior_schedule.logsnr_max

    def encode_clean(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """z_clean = E(x) and, for learned variance, λ_e ∈ [λ_min + margin, λ₀] (UL-SPEC §2, §7)."""
        out = self.encoder(x)
        if not self.learned_variance:
            return out, None
        z_clean, raw = out.split(self.latent_channels, dim=1)
        lo = self.prior_schedule.logsnr_min + LAMBDA_E_MARGIN
        return z_clean, lo + (self.lambda0 - lo) * torch.sigmoid(raw + 4.0)

    def noisy_latent(
        self, z_clean: torch.Tensor, logsnr_e: torch.Tensor | None, noise: torch.Tensor
    ) -> torch.Tensor:
        """z₀ = α₀·z_clean + σ₀·ε (per element α_e, σ_e with learned variance), UL-SPEC §2."""
        lam = (torch.as_tensor(self.lambda0, dtype=z_clean.dtype, device=z_clean.device) if logsnr_e is None
               else logsnr_e)
        alpha, sigma = alpha_sigma(lam)
        return alpha * z_clean + sigma * noise

    def decoder_cond(self, z0: torch.Tensor, logsnr_e: torch.Tensor | None = None) -> torch.Tensor:
        """z₀ (and the λ_e map) upsampled to pixels (nearest), to concatenate with x_t (UL-SPEC §4)."""
        parts = [z0] if logsnr_e is None else [z0, (logsnr_e - self.lambda0) / 10.0]
        cond = torch.cat(parts, dim=1) if len(parts) > 1 else z0
        f = self.downsample_factor
        return F.interpolate(cond, scale_factor=float(f), mode="nearest") if f > 1 else cond

    def losses(self, x: torch.Tensor, noise) -> dict[str, torch.Tensor]:
        """Per-image stage-1 terms in nats: prior, dec (weighted), dec_elbo (w ≡ 1) and total (UL-SPEC §5).

        All randomness comes from `noise` (a per-sample `ul_models.training.noise.SampleNoise`) in a fixed order:
        encoder noise, prior (t, ε), decoder (t, ε); so a sample's terms do not depend on its batch or device.
        """
        f = self.downsample_factor
        z_shape = (self.latent_channels, x.shape[-2] // f, x.shape[-1] // f)
        noise0, t_prior, eps_prior = noise.randn(*z_shape), noise.stratified_t(), noise.randn(*z_shape)
        t_dec, eps_dec = noise.stratified_t(), noise.randn(*x.shape[1:])
        z_clean, logsnr_e = self.encode_clean(x)
        z0 = self.noisy_latent(z_clean, logsnr_e, noise0)

        z_for_prior, lam_for_prior = z_clean, logsnr_e
        if self.separate_prior:
            z_for_prior = z_clean.detach()
            lam_for_prior = None if logsnr_e is None else logsnr_e.detach()
        prior_terms = prior_loss(
            self.prior.eps, z_for_prior, t_prior, eps_prior, self.prior_schedule, lam_for_prior
        )
        cond = self.decoder_cond(z0, logsnr_e)
        dec_terms = decoder_loss(
            lambda z_t, lam: self.decoder.eps(z_t, lam, cond),
            x,
            t_dec,
            eps_dec,
            self.pixel_schedule,
            self.bias_b,
        )
        total = stage1_objective(prior_terms["prior"], dec_terms["dec"], self.c_lf)
        if self.separate_prior_rate == "gaussian_kl":
            kl = gaussian_kl_nats(z_clean, logsnr_e, self.lambda0)
            return {**prior_terms, **dec_terms, "kl": kl, "total": total + kl}
        return {**prior_terms, **dec_terms, "total": total}

    @torch.no_grad()
    def prior_nats(
        self, z_clean: torch.Tensor, logsnr_e: torch.Tensor | None, seeds: torch.Tensor, draws: int = 64,
        precision: str = "fp32",
    ) -> tuple:
        """Per-image L_prior (nats) mean and standard error over `draws` seeded (t, ε) draws (UL-SPEC §3)."""
        def eps_fn(z_t, lam):
            with autocast(z_clean.device, precision):
                return self.prior.eps(z_t, lam).float()

        return estimate_prior_nats(eps_fn, z_clean, self.prior_schedule, seeds, draws, logsnr_e)

    @torch.no_grad()
    def decode(
        self,
        z0: torch.Tensor,
        logsnr_e: torch.Tensor | None,
        seeds: torch.Tensor,
        steps: int,
        micro_batch: int = 16,
        precision: str = "fp32",
    ) -> torch.Tensor:
        """Decoder sampler from noise to x̂ ∈ [−1, 1] given z₀ (DDIM in λ, per-sample seeds), UL-SPEC §6.

        Runs on z₀'s device (noise drawn on CPU generators and moved), the decoder under autocast(precision)."""
        cond = self.decoder_cond(z0, logsnr_e)
        shape = (3, z0.shape[-2] * self.downsample_factor, z0.shape[-1] * self.downsample_factor)
        return sample(
            lambda z_t, lam, c: self.decoder.eps(z_t, lam, c),
            shape,
            seeds,
            self.pixel_schedule,
            steps,
            cond=cond,
            clip_x=1.0,
            micro_batch=micro_batch,
            stream=SAMPLER_STREAM,
            device=z0.device,
            precision=precision,
        )

    @torch.no_grad()
    def encode_batched(
        self, x: torch.Tensor, micro_batch: int = 16, precision: str = "fp32"
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`encode_clean` on fixed-size micro-batches, so each image's latent is independent of batch size;
        the encoder runs under autocast(precision) on x's device, latents come back float32."""
        def enc(xx: torch.Tensor) -> torch.Tensor:
            with autocast(xx.device, precision):
                out = self.encode_clean(xx)
            return torch.cat([v.float() for v in out if v is not None], 1)

        out = map_microbatches(enc, [x], micro_batch)
        if not self.learned_variance:
            return out, None
        return out[:, : self.latent_channels], out[:, self.latent_channels :]


def build_stage1(cfg: ULConfig, num_classes: int = 0) -> UnifiedLatents:
    """Build encoder, prior and decoder networks from a ULConfig (tiny ≈ 0.5M parameters)."""
    c = cfg.latent_channels
    encoder = Encoder(
        3, 2 * c if cfg.learned_variance else c, cfg.encoder_levels(), cfg.num_blocks, cfg.encoder_patch_size
    )
    prior = Denoiser(
        c,
        cfg.prior_channels,
        cfg.num_blocks,
        emb_dim=cfg.emb_dim,
        prediction=cfg.prior_prediction,
        logsnr_map=cfg.learned_variance,
    )
    decoder = Denoiser(
        3,
        cfg.decoder_channels,
        cfg.num_blocks,
        cond_channels=2 * c if cfg.learned_variance else c,
        emb_dim=cfg.emb_dim,
        num_classes=num_classes,
        prediction=cfg.decoder_prediction,
        patch_size=cfg.decoder_patch_size,
    )
    prior_schedule = Schedule(cfg.prior_schedule, cfg.lambda_min, cfg.lambda0)
    shift = resolution_shift(cfg.resolution) if cfg.pixel_resolution_shift else 0.0
    pixel_schedule = Schedule("cosine", cfg.pixel_logsnr_min, cfg.pixel_logsnr_max, shift)
    return UnifiedLatents(
        encoder,
        prior,
        decoder,
        prior_schedule,
        pixel_schedule,
        cfg.downsample_factor,
        c,
        c_lf=cfg.c_lf,
        bias_b=cfg.bias_b,
        separate_prior=cfg.separate_prior,
        learned_variance=cfg.learned_variance,
        separate_prior_rate=cfg.separate_prior_rate,
    )
