"""Issue 15 (numbers half): PSNR stays finite, non-finite outputs fail, caches heal, checkpoints are hashed and
checked, the Inception file is read once."""

from __future__ import annotations

import os
import sys

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


class _Payload:
    """What a malicious weights file runs when unpickled with weights_only=False: creates `marker`."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


_SWAP: dict = {}  # the audit hook below (hooks cannot be removed) acts only while this names a file


def _swap_on_second_open(event: str, args: tuple) -> None:
    if event != "open" or not _SWAP or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    if os.fspath(args[0]) == _SWAP["path"]:
        _SWAP["opens"] += 1
        if _SWAP["opens"] == 2:  # an attacker replaces the file after ulbench checked it
            os.replace(_SWAP["evil"], _SWAP["path"])


def test_inception_file_is_read_once_and_never_unpickled_unsafely(tmp_path, inception_weights):
    """Issue 15.8: the Inception file was checked with weights_only=True, then reopened and unpickled by
    torch-fidelity with weights_only=False: a file swapped in between ran its pickle. Now the checked bytes are
    read once and torch-fidelity never sees the file."""
    import hashlib
    import shutil

    from ulbench.metrics.features import InceptionDetector

    path = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    shutil.copy(inception_weights, path)
    marker, evil = tmp_path / "payload-ran", tmp_path / "evil.pth"
    torch.save({"x": _Payload(str(marker))}, evil)
    if not getattr(sys, "_ulbench_swap_hook", False):
        sys.addaudithook(_swap_on_second_open)
        sys._ulbench_swap_hook = True
    _SWAP.update(path=str(path), evil=str(evil), opens=0)
    error = None
    try:
        det = InceptionDetector(weights=str(path))
        prov = det.provenance()
    except Exception as e:  # before the fix torch-fidelity unpickled the swapped file, then failed to load it
        error = e
    finally:
        opens = _SWAP["opens"]
        _SWAP.clear()
    assert not marker.exists(), "the swapped-in pickle ran: the file was unpickled with weights_only=False"
    assert error is None and opens == 1
    assert prov["detector_weights_sha256"] == hashlib.sha256(open(inception_weights, "rb").read()).hexdigest()
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert np.isfinite(det.features(x)).all() and det.features(x).std() > 0


@pytest.fixture(scope="module")
def ul_run(tmp_path_factory):
    """A tiny trained UL run (stage 1, 16 px)."""
    from tests.conftest import TINY_UL
    from ul_models.config import ULConfig
    from ul_models.train import train_stage1

    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("ul") / "run"
    train_stage1(ULConfig.preset("tiny", **{**TINY_UL, "steps": 4}), run_dir, progress=False)
    return run_dir


def _poisoned_copy(run_dir, dest, part: str):
    """A copy of the run whose EMA `part` ("decoder" or "prior") holds NaN, written by the checkpoint writer (as a
    run that diverged would be)."""
    import json
    import shutil

    from ul_models.checkpoint import write_checkpoint
    from ul_models.config import ULConfig
    from ul_models.model import build_stage1
    from ul_models.train import CHECKPOINT, load_checkpoint

    shutil.copytree(run_dir, dest)
    cfg = ULConfig.from_dict(json.loads((dest / "config.json").read_text()))
    model, ema = build_stage1(cfg), build_stage1(cfg)
    state = load_checkpoint(dest, model=model, ema=ema)
    with torch.no_grad():
        for p in getattr(ema, part).parameters():
            p.fill_(float("nan"))
    state.pop("param_groups", None)
    write_checkpoint(dest / CHECKPOINT, {"model": model, "ema": ema}, None, state)
    return dest


def _eval_rows(space: str, out, metrics: str = "psnr,ssim,bpp"):
    import json

    from click.testing import CliRunner

    from ulbench.cli import main

    res = CliRunner().invoke(main, ["eval", "--space", space, "--data", "embedded", "--resolution", "16",
                                    "--metrics", metrics, "--limit", "8", "--batch-size", "4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()]
    return {r["metric"]: r for r in rows}, res


def test_nan_decoder_fails_every_metric_naming_the_decoder(ul_run, tmp_path):
    """Issue 15.2: a NaN decoder was cast to uint8 and gave plausible PSNR/SSIM, all "ok"; now every metric of
    the run is "failed", the reason names the decoder, and compare shows "failed", not "–"."""
    from click.testing import CliRunner

    from ulbench.cli import main

    bad = _poisoned_copy(ul_run, tmp_path / "nan-decoder", "decoder")
    rows, _ = _eval_rows(f"ul:{bad}", tmp_path / "out")
    assert set(rows) >= {"psnr", "ssim", "bpp"}
    for metric in ("psnr", "ssim", "bpp"):
        r = rows[metric]
        assert r["status"] == "failed" and r["value"] is None, (metric, r["status"], r["value"])
        assert f"decoder of ul:{bad}" in r["reason"] and "non-finite" in r["reason"]
    table = CliRunner().invoke(main, ["compare", str(tmp_path / "out" / "results.jsonl")])
    assert table.exit_code == 0 and "failed" in table.output, table.output


def test_nan_prior_fails_bpp_only(ul_run, tmp_path):
    """Issue 15.2: a NaN prior gave bpp = nan with status "ok" (shown as "–", "not measured"); now bpp is
    "failed" naming the rate estimate, while PSNR of the finite decoder stays "ok"."""
    from ulbench.compare import format_value
    from ulbench.report.tables import main_table

    bad = _poisoned_copy(ul_run, tmp_path / "nan-prior", "prior")
    rows, _ = _eval_rows(f"ul:{bad}", tmp_path / "out")
    assert rows["bpp"]["status"] == "failed" and "bits['total']" in rows["bpp"]["reason"]
    assert rows["psnr"]["status"] == "ok" and np.isfinite(rows["psnr"]["value"])
    table = main_table(list(rows.values()), with_paper=False)
    cells = {c.split(" ")[0]: table[c].iloc[0] for c in table.columns if c != "system"}
    assert cells["bpp"] == "failed" and cells["PSNR"] != "failed"
    assert format_value(float("nan"), None) == "failed" and format_value(None, None) == "–"


def _cli(args):
    from click.testing import CliRunner

    from ulbench.cli import main

    return CliRunner().invoke(main, args)


def _eval_args(run_dir, out=None):
    return ["eval", "--space", f"ul:{run_dir}", "--data", "embedded", "--resolution", "16", "--metrics", "psnr",
            "--limit", "8", "--batch-size", "4", *(["--out", str(out)] if out else [])]


def _one_error_line(res, path) -> str:
    assert res.exit_code != 0 and "Traceback" not in res.output, res.output
    err = res.output.split("error:", 1)[1]
    assert "error:" not in err and len(err.strip().splitlines()) == 1, res.output
    assert str(path) in err and "delete it and rerun" in err
    return err


def test_checkpoint_sha256_in_provenance_and_tampering_is_an_error(ul_run, tmp_path):
    """Issue 15.5: overwriting part of a tensor in checkpoint.safetensors changed PSNR with no error, and rows had
    no checkpoint hash; now rows carry the file's sha256 and a changed tensor is one `error:` line naming it."""
    import hashlib
    import json
    import shutil

    run = tmp_path / "run"
    shutil.copytree(ul_run, run)
    ckpt = run / "checkpoint.safetensors"
    res = _cli(_eval_args(run, tmp_path / "out"))
    assert res.exit_code == 0, res.output
    (row,) = [json.loads(ln) for ln in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert row["provenance"]["system_info"]["provenance"]["checkpoint_sha256"] == \
        hashlib.sha256(ckpt.read_bytes()).hexdigest()
    data = bytearray(ckpt.read_bytes())
    (header_len,) = np.frombuffer(bytes(data[:8]), dtype="<u8")
    header = json.loads(bytes(data[8:8 + int(header_len)]))
    begin, end = header["ema.decoder.out.weight"]["data_offsets"] if "ema.decoder.out.weight" in header else \
        next(v["data_offsets"] for k, v in header.items() if k.startswith("ema.decoder") and k.endswith("weight"))
    start = 8 + int(header_len) + begin
    data[start:start + (end - begin) // 2] = np.full((end - begin) // 8, 0.5, np.float32).tobytes()
    ckpt.write_bytes(bytes(data))
    _one_error_line(_cli(_eval_args(run)), ckpt)


def test_truncated_checkpoint_is_one_error_line_naming_the_file(ul_run, tmp_path):
    """Issue 15.5: a truncated checkpoint gave a raw SafetensorError traceback naming no file."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(ul_run, run)
    ckpt = run / "checkpoint.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    err = _one_error_line(_cli(_eval_args(run)), ckpt)
    assert "not a readable checkpoint" in err
