"""Baseline latent spaces: pixels, JPEG and the SD-VAE (diffusers AutoencoderKL)."""
