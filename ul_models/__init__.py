"""Unified Latents (arXiv 2602.17270) for ulbench: schedules, ELBO terms, networks, training, LatentSpace.

Modules by role (UL-SPEC.md): `schedule` (log-SNR λ(t)), `losses` (ELBO terms in nats), `nets` (encoder, UNet
denoiser), `model` (stage-1 encoder + prior + decoder), `sampler` (DDIM / ancestral in λ, per-sample seeds),
`config` (ULConfig presets), `train` (`train_stage1`), `space` (`load_ul_space`, registry entry `ul:RUN_DIR`).
Imports are left to the submodules so `import ul_models` stays cheap.
"""
