"""Metrics: Fréchet distances (rFID, gFID, FVD), KID, PSNR/SSIM, LPIPS, bits and FLOPs."""
