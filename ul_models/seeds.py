"""One registry of seed streams: every random draw in ulbench derives from (seed, stream, keys…) [edm2, ours].

A stream number is used by exactly one purpose, so no two trainers or samplers share draws. Training draws are
per sample: the sample at global batch position p of step s uses `seed_for(seed, stream, s, p)`, so a rank's
share, a micro-batch or a device never changes what a sample sees.
"""

from __future__ import annotations

import numpy as np

STREAMS: dict[str, int] = {
    # evaluation and sampling: mix_seed(image seed, stream) (numbers kept from the first version, results unchanged)
    "encoder": 1,  # ul_models.space ENCODER_STREAM: z₀ noise at eval
    "sampler": 2,  # ul_models.sampler SAMPLER_STREAM: sampler noise
    "bits": 3,  # ul_models.space BITS_STREAM: (t, ε) draws of the bits estimate
    "prior_bits": 7,  # estimate_prior_nats default stream
    "labels": 41,  # ul_models.base LABEL_STREAM: class labels of generated samples
    "label_noise": 43,  # ul_models.space NOISE_STREAM: learned-variance re-noising of base samples
    "frames": 51,  # ul_models.video FRAME_STREAM: per-frame decoder seeds of video
    # training: seed_for(run seed, stream, step, position) per sample, so shares and devices never change draws
    "init": 100,  # weight initialisation (keyed by the trainer's stream)
    "data_order": 101,  # epoch permutations of the training set
    "ul_stage1": 110,  # UL stage 1: flips, encoder noise, prior (t, ε), decoder (t, ε)
    "base": 111,  # stage-2 image base model
    "latent_bound": 112,  # the fitted prior of the UL bound of any space
    "video_base": 113,  # frame-prediction base model
    "sd_vae_tiny": 114,  # sd-vae-tiny posterior noise
}
assert len(set(STREAMS.values())) == len(STREAMS), "seed streams must be distinct"


def stream(name: str) -> int:
    """The number of a named stream; unknown names raise (no ad-hoc streams)."""
    if name not in STREAMS:
        raise KeyError(f"unknown seed stream {name!r}; register it in ul_models.seeds.STREAMS")
    return STREAMS[name]


def seed_for(seed: int, name: str, *keys: int) -> int:
    """A 63-bit generator seed from (seed, stream, keys…) via numpy's SeedSequence (collision-free mixing)."""
    mask = 0xFFFFFFFFFFFFFFFF  # negative ints map to their 64-bit two's complement
    entropy = [int(seed) & mask, stream(name)] + [int(k) & mask for k in keys]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))
