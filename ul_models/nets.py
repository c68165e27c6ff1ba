"""Small convolutional encoder and UNet denoisers for Unified Latents (UL-SPEC §2-5; simple diffusion, edm2).

`Denoiser` is one UNet used three ways: the latent prior (ε head), the pixel decoder (v head, conditioned on
the upsampled z₀ concatenated to its input) and, later, the stage-2 base model (optional class-label
embedding).
Networks take plain constructor arguments and are channels_last-friendly (10-20% faster on CPU here).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

PREDICTIONS = ("eps", "v")


def _groups(channels: int) -> int:
    """GroupNorm groups: 8 where the channel count allows, else the largest divisor ≤ 8."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class LogSNREmbedding(nn.Module):
    """Sinusoidal features of λ/10 at geometric frequencies 1..100, then a 2-layer MLP (DDPM/edm2 style)."""

    def __init__(self, emb_dim: int, num_freqs: int = 32):
        super().__init__()
        self.register_buffer(
            "freqs", torch.exp(torch.linspace(0.0, math.log(100.0), num_freqs)), persistent=False
        )
        self.mlp = nn.Sequential(nn.Linear(2 * num_freqs, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, logsnr: torch.Tensor) -> torch.Tensor:
        """Embed a per-image log-SNR vector (B,)."""
        arg = (logsnr.float() / 10.0)[:, None] * self.freqs[None]
        return self.mlp(torch.cat([arg.cos(), arg.sin()], dim=1))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv ×2, optional scale/shift from an embedding; zero-initialised residual branch."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int = 0):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(out_channels), out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_channels) if emb_dim else None
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.emb is not None and emb is not None:
            scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
            h = h * (1.0 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class Encoder(nn.Module):
    """Deterministic encoder z_clean = E(x): downsample by patch·2^(levels−1) to out_channels (UL-SPEC §2)."""

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 4,
        channels: tuple[int, ...] = (24, 48),
        num_blocks: int = 1,
        patch_size: int = 2,
    ):
        super().__init__()
        self.patch_size = patch_size  # pixel-unshuffle stem: the first level runs at d/patch_size
        self.stem = nn.Conv2d(in_channels * patch_size**2, channels[0], 3, padding=1)
        self.levels = nn.ModuleList()
        prev = channels[0]
        for ch in channels:
            blocks = [ResBlock(prev if b == 0 else ch, ch) for b in range(num_blocks)]
            self.levels.append(nn.ModuleList(blocks))
            prev = ch
        self.norm = nn.GroupNorm(_groups(prev), prev)
        self.head = nn.Conv2d(prev, out_channels, 3, padding=1)
        self.downsample_factor = patch_size * 2 ** (len(channels) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [−1, 1] (B, 3, H, W) → (B, out_channels, H/f, W/f)."""
        h = self.stem(F.pixel_unshuffle(x, self.patch_size) if self.patch_size > 1 else x)
        for level, blocks in enumerate(self.levels):
            if level:
                h = F.avg_pool2d(h, 2)
            for block in blocks:
                h = block(h)
        return self.head(F.silu(self.norm(h)))


class Denoiser(nn.Module):
    """UNet denoiser ε̂(z_t; λ, cond, label) with an ε or v head (UL-SPEC §5 "Parametrisation")."""

    def __init__(
        self,
        in_channels: int,
        channels: tuple[int, ...] = (32, 64),
        num_blocks: int = 1,
        cond_channels: int = 0,
        emb_dim: int = 128,
        num_classes: int = 0,
        prediction: str = "eps",
        logsnr_map: bool = False,
        patch_size: int = 1,
    ):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        self.in_channels = in_channels  # channels of z_t (also of the output)
        self.cond_channels = cond_channels  # channels concatenated to z_t (upsampled z₀, λ maps), 0 = none
        self.num_classes = num_classes  # >0: class-conditional, label `num_classes` is the null label
        self.prediction = prediction  # "eps": net predicts ε; "v": net predicts v = α ε − σ x
        self.logsnr_map = logsnr_map  # also take the per-element λ map as input (learned-variance prior)
        self.patch_size = (
            patch_size  # pixel-unshuffle in / pixel-shuffle out: the UNet runs at side/patch_size
        )
        self.embed = LogSNREmbedding(emb_dim)
        self.label_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        extra = in_channels if logsnr_map else 0
        p2 = patch_size**2
        self.stem = nn.Conv2d((in_channels + cond_channels + extra) * p2, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        prev = channels[0]
        for ch in channels:
            self.down.append(
                nn.ModuleList([ResBlock(prev if b == 0 else ch, ch, emb_dim) for b in range(num_blocks)])
            )
            prev = ch
        self.mid = ResBlock(prev, prev, emb_dim)
        self.up = nn.ModuleList()
        for ch in reversed(channels):
            self.up.append(
                nn.ModuleList([ResBlock(prev if b == 0 else ch, ch, emb_dim) for b in range(num_blocks)])
            )
            prev = ch
        self.norm = nn.GroupNorm(_groups(prev), prev)
        self.head = nn.Conv2d(prev, in_channels * p2, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(
        self,
        z_t: torch.Tensor,
        logsnr: torch.Tensor,
        cond: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Raw network output (ε̂ or v̂); `logsnr` is (B,) or, with logsnr_map, a per-element map like z_t."""
        if logsnr.ndim > 1:
            lam_map = logsnr.expand_as(z_t)
            logsnr = lam_map.flatten(1).mean(1)
        else:
            lam_map = logsnr[:, None, None, None].expand_as(z_t)
        emb = self.embed(logsnr)
        if self.label_embed is not None:
            if labels is None:
                labels = torch.full((z_t.shape[0],), self.num_classes, dtype=torch.long, device=z_t.device)
            emb = emb + self.label_embed(labels)
        emb = F.silu(emb)
        parts = [z_t]
        if self.cond_channels:
            if cond is None:
                raise ValueError(
                    f"this denoiser needs a conditioning image with {self.cond_channels} channels"
                )
            parts.append(cond)
        if self.logsnr_map:
            parts.append(lam_map / 10.0)
        h = torch.cat(parts, dim=1) if len(parts) > 1 else z_t
        h = self.stem(F.pixel_unshuffle(h, self.patch_size) if self.patch_size > 1 else h)
        skips = []
        for level, blocks in enumerate(self.down):
            if level:
                h = F.avg_pool2d(h, 2)
            for block in blocks:
                h = block(h, emb)
            skips.append(h)
        h = self.mid(h, emb)
        for level, blocks in enumerate(self.up):
            if level:
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = blocks[0](h, emb) + skips.pop()
            for block in blocks[1:]:
                h = block(h, emb)
        out = self.head(F.silu(self.norm(h)))
        return F.pixel_shuffle(out, self.patch_size) if self.patch_size > 1 else out

    def eps(
        self,
        z_t: torch.Tensor,
        logsnr: torch.Tensor,
        cond: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """ε̂ whatever the head: for v, ε̂ = σ_t·z_t + α_t·v̂ (UL-SPEC §5; Salimans & Ho 2022)."""
        out = self.forward(z_t, logsnr, cond, labels)
        if self.prediction == "eps":
            return out
        lam = logsnr if logsnr.ndim > 1 else logsnr[:, None, None, None]
        return torch.sigmoid(-lam).sqrt() * z_t + torch.sigmoid(lam).sqrt() * out


def count_params(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
