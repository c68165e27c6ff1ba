"""Video UL (issue 6): frame-prediction base model invariances, user errors and an end-to-end `ulbench run`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from ul_models.video import FrameCodec, VideoBaseConfig, VideoPredictor, frame_seeds, train_video_base

TINY = dict(steps=2, batch_size=4, channels=(16, 32), emb_dim=32, checkpoint_every=1, warmup_steps=1,
            num_threads=1)


def tiny_clips(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random clips drifting right one pixel a frame: uint8 (n, 16, 3, 32, 32) and labels."""
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.rand(n, 3, 8, 48, generator=g), size=(32, 48), mode="bilinear")
    clips = torch.stack([base[..., t:t + 32] for t in range(16)], dim=1)
    return (clips * 255).round().to(torch.uint8), torch.arange(n) % 3


def tiny_ul_space():
    """A randomly initialised tiny per-frame UL space (no stage-1 training needed for invariance tests)."""
    from ul_models.config import ULConfig
    from ul_models.model import build_stage1
    from ul_models.space import ULSpace

    cfg = ULConfig.preset("tiny", encoder_channels=(8, 16), prior_channels=(8, 16), decoder_channels=(8, 16),
                          emb_dim=16)
    torch.manual_seed(0)
    return ULSpace(build_stage1(cfg), cfg, "", decode_steps=2, bits_draws=2, trained_steps=0)


@pytest.fixture(scope="module", params=["ul", "pixel"])
def predictor(request, tmp_path_factory):
    torch.set_num_threads(1)
    codec = FrameCodec(tiny_ul_space() if request.param == "ul" else None, decode_steps=2)
    clips, labels = tiny_clips()
    d = tmp_path_factory.mktemp(f"video-base-{request.param}")
    train_video_base(VideoBaseConfig(**TINY), d, codec, clips, labels, num_classes=3, progress=False)
    return VideoPredictor(d, codec, steps=2), clips, labels


def test_predictions_are_per_seed_and_batch_size_invariant(predictor):
    pred, clips, labels = predictor
    seeds = torch.tensor([11, 12, 13], dtype=torch.int64)
    together = pred.predict(clips[:3], labels[:3], seeds)
    one_by_one = torch.cat([pred.predict(clips[i:i + 1], labels[i:i + 1], seeds[i:i + 1]) for i in range(3)])
    assert together.dtype == torch.uint8 and together.shape == (3, 16, 3, 32, 32)
    assert torch.equal(together, one_by_one)
    assert torch.equal(together, pred.predict(clips[:3], labels[:3], seeds))
    assert not torch.equal(together[:, 5:], pred.predict(clips[:3], labels[:3], seeds + 100)[:, 5:])


def test_prediction_keeps_the_real_context(predictor):
    pred, clips, labels = predictor
    out = pred.predict(clips[:2], labels[:2], torch.tensor([0, 1]))
    assert torch.equal(out[:, :5], clips[:2, :5])
    assert pred.info()["context_frames"] == 5 and pred.info()["predicted_frames"] == 11


def test_resume_matches_uninterrupted_training(tmp_path):
    from ul_models.video import _load, build_video_base

    torch.set_num_threads(1)
    codec, (clips, labels) = FrameCodec(None), tiny_clips(4)
    cfg = VideoBaseConfig(**{**TINY, "steps": 3})
    train_video_base(cfg, tmp_path / "a", codec, clips, labels, 3, progress=False)
    train_video_base(VideoBaseConfig(**{**TINY, "steps": 1}), tmp_path / "b", codec, clips, labels, 3,
                     progress=False)
    train_video_base(cfg, tmp_path / "b", codec, clips, labels, 3, progress=False)
    nets = [build_video_base(cfg, (3, 32, 32), 3, 10.0, True)[0] for _ in range(2)]
    for net, d in zip(nets, ("a", "b")):
        assert _load(tmp_path / d, ema=net)["step"] == 3
    for p, q in zip(*(n.state_dict().values() for n in nets)):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="another video base config"):
        train_video_base(VideoBaseConfig(**{**TINY, "lr": 1e-4}), tmp_path / "b", codec, clips, labels, 3,
                         progress=False)


def test_user_errors():
    with pytest.raises(ValueError, match="context_frames"):
        VideoBaseConfig(num_frames=5, context_frames=5)
    with pytest.raises(ValueError, match="unknown video base keys"):
        VideoBaseConfig.from_dict({"stpes": 3})
    assert len(set(frame_seeds(torch.tensor([1, 2]), range(16)).tolist())) == 32


def test_video_run_rejects_image_detector_and_metrics():
    from ulbench.config import load_suite
    from ulbench.metrics.features import ProxyDetector
    from ulbench.metrics.fvd import VideoProxyDetector
    from ulbench.video_suite import run_video_run

    suite = load_suite("video")
    with pytest.raises(ValueError, match="not a video detector"):
        run_video_run("/nonexistent", suite, suite.runs[0], ProxyDetector(), print)
    bad = load_suite("video", ["eval.metrics=[bpp, gfid]"])
    with pytest.raises(ValueError, match="not video metrics"):
        run_video_run("/nonexistent", bad, bad.runs[0], VideoProxyDetector(), print)


MINI = """
include: [{suite}]
eval: {{num_eval: 6, sample_steps: 2, decode_steps: 2, batch_size: 4, detector: video-proxy}}
defaults:
  stage1: {{steps: 2, batch_size: 8, eval_every: 2, checkpoint_every: 2, eval_images: 4, eval_draws: 2,
           decode_steps: 2, encoder_channels: [8, 16], prior_channels: [8, 16], decoder_channels: [8, 16]}}
  base: {{steps: 2, batch_size: 4, checkpoint_every: 2, channels: [16, 32], bits_draws: 2, grid_clips: 2}}
"""


def test_end_to_end_video_suite(tmp_path):
    from ulbench.cli import main
    from ulbench.config import SUITES_DIR, load_suite

    assert load_suite("video").data == "video-embedded"
    path = tmp_path / "mini-video.yaml"
    path.write_text(MINI.format(suite=SUITES_DIR / "video.yaml"))
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["run", "--suite", str(path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    got = {(r["system"], r["metric"]): r for r in rows}
    for system in ("ul-video", "pixel-video"):
        for metric in ("bpp", "psnr", "rfvd", "fvd", "fvd_copy_last", "train_flops"):
            assert got[(system, metric)]["status"] == "ok", (system, metric)
        fvd = got[(system, "fvd")]
        assert fvd["proxy"] is True and "[proxy]" in fvd["label"] and got[(system, "rfvd")]["proxy"] is True
        p = fvd["provenance"]
        assert (p["num_videos"], p["num_frames"], p["stride"], p["resolution"]) == (6, 16, 1, 32)
        assert p["context_frames"] == 5 and p["detector"] == "video-proxy"
        grids = fvd["extra"]["grids"]
        assert grids and all(v.endswith(".png") and Path(v).is_file() for v in grids.values())
    assert got[("pixel-video", "bpp")]["value"] == 24.0 and got[("pixel-video", "rfvd")]["value"] < 1e-6
    assert got[("ul-video", "train_flops")]["value"] > 0
    assert "FVD [proxy]" in res.output
    md = (out / "report.md").read_text()
    assert "PROXY" in md and "predictions" in md
    again = CliRunner().invoke(main, ["run", "--suite", str(path), "--out", str(out), "--no-report"])
    assert again.exit_code == 0 and again.output.count("reusing finished run") == 2
