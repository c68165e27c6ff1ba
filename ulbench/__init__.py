"""ulbench: evaluation and benchmarking of diffusion latent spaces (Unified Latents, arXiv 2602.17270)."""

__version__ = "0.1.0"
