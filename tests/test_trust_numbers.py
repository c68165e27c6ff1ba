"""Issue 15 (numbers half): PSNR stays finite, non-finite outputs fail, caches heal, checkpoints are hashed and
checked, the Inception file is read once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

from baselines.jpeg import JpegSpace
from tests.conftest import write_pngs


def _flat_plus_photos(eval_images: torch.Tensor) -> torch.Tensor:
    """One flat grey image (JPEG reproduces it exactly) and seven photos."""
    flat = torch.full((1, 3, 32, 32), 128, dtype=torch.uint8)
    return torch.cat([flat, eval_images[:7]])


def test_psnr_mean_is_finite_capped_and_counts_every_image(tmp_path, eval_images):
    """Issue 15.3: one exactly reproduced image made the dataset PSNR inf; now it counts 100 dB and the others
    count too (the mean equals skimage's per-image PSNR, the flat one capped, averaged)."""
    import ulbench

    x = _flat_plus_photos(eval_images)
    folder = write_pngs(tmp_path / "imgs", x)
    (row,) = ulbench.evaluate("jpeg-q10", data=f"folder:{folder}", metrics=["psnr"], batch_size=3)
    y = JpegSpace(10).reconstruct(x, torch.arange(len(x))).x_hat
    with np.errstate(divide="ignore"):
        ref = [peak_signal_noise_ratio(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy(), data_range=255)
               for a, b in zip(x, y)]
    assert np.isinf(ref[0]) and np.isfinite(ref[1:]).all()  # the case: skimage says inf for the flat image
    expected = np.mean([100.0, *ref[1:]])  # the stated cap: 100 dB
    assert row.status == "ok" and np.isfinite(row.value), row.value
    assert row.value == pytest.approx(expected, rel=1e-9)
    assert row.extra["psnr_cap_db"] == 100.0 and row.extra["num_images_capped"] == 1
    assert "capped at 100 dB" in row.provenance["psnr"]


def _rfid(limit: int = 48) -> tuple[float, list]:
    import ulbench

    rows = ulbench.evaluate("jpeg-q50", metrics=["rfid"], detector="proxy", limit=limit, batch_size=16)
    return rows.value("rfid"), rows


def _cache_file(tmp_path) -> "Path":  # noqa: F821
    (path,) = (tmp_path / "cache" / "features").glob("*.npz")
    return path


def test_feature_cache_rewritten_with_scaled_features_is_recomputed(tmp_path, capsys):
    """Issue 15.4: a cache file rewritten with scaled features was used silently (another rFID); entries now carry
    a sha256 and a mismatching entry is recomputed with one warning line naming the file."""
    fresh, _ = _rfid()
    path = _cache_file(tmp_path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["feats"] = arrays["feats"] * 3.0
    np.savez(path, **arrays)
    capsys.readouterr()
    again, _ = _rfid()
    assert again == pytest.approx(fresh, rel=1e-9, abs=1e-12)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(lines) == 1 and str(path) in lines[0] and "sha256" in lines[0]
    healed, _ = _rfid()  # the healed file is used as is, without a warning
    assert healed == pytest.approx(fresh, rel=1e-9, abs=1e-12)
    assert "warning:" not in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_feature_cache_is_recomputed_with_a_warning(tmp_path, capsys, damage):
    """Issue 15.4: a damaged cache file (truncated, or a flipped byte: BadZipFile / Bad CRC-32) broke every eval of
    the dataset with a traceback naming no file; now it is recomputed with one warning line naming it."""
    fresh, _ = _rfid()
    path = _cache_file(tmp_path)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 3] ^= 0xFF  # inside the feats array: its CRC-32 no longer matches
    path.write_bytes(bytes(data))
    capsys.readouterr()
    again, _ = _rfid()
    assert again == pytest.approx(fresh, rel=1e-9, abs=1e-12)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(lines) == 1 and str(path) in lines[0]
