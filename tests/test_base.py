"""Stage-2 base model (UL-SPEC §6): per-seed deterministic, batch-size independent, resumable; gFID rows."""

from __future__ import annotations

import pytest
import torch

from ul_models.base import BaseConfig, BaseGenerator, train_base
from ulbench.data.base import Subset
from ulbench.data.embedded import embedded_photos
from ulbench.evaluation import eval_generator
from ulbench.metrics.features import ProxyDetector

CFG = BaseConfig(space="pixel", steps=4, batch_size=8, checkpoint_every=2, channels=(8, 16), num_threads=1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("base")
    summary = train_base(CFG, d, resume=False, progress=False)
    assert summary["steps"] == 4 and summary["samples_seen"] == 32
    return d


def test_samples_depend_only_on_their_seed(run):
    gen = BaseGenerator(run, steps=3)
    seeds = torch.arange(10, 15)
    whole = gen.sample(seeds)
    parts = torch.cat([gen.sample(seeds[:2]), gen.sample(seeds[2:])])
    assert whole.dtype == torch.uint8 and whole.shape == (5, 3, 32, 32)
    assert torch.equal(whole, parts)
    assert torch.equal(gen.sample(seeds[3:4]), whole[3:4])
    assert not torch.equal(gen.sample(seeds + 100), whole)


def test_resume_continues_to_the_same_weights(run, tmp_path):
    import dataclasses

    from ul_models.base import _load, build_base

    short = dataclasses.replace(CFG, steps=2)
    train_base(short, tmp_path, resume=False, progress=False)
    train_base(CFG, tmp_path, resume=True, progress=False)  # steps 2 -> 4 from the step-2 checkpoint
    a, _ = build_base(CFG, (3, 32, 32), 9, 10.0)
    b, _ = build_base(CFG, (3, 32, 32), 9, 10.0)
    _load(run, ema=a)
    _load(tmp_path, ema=b)
    for (k, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6), k


def test_gfid_rows_are_labelled_and_batch_independent(run):
    gen = BaseGenerator(run, steps=2)
    ref = Subset(embedded_photos("train"), 40)
    det = ProxyDetector()
    a = eval_generator(gen, ref, det, num_samples=24, batch_size=24)
    b = eval_generator(gen, ref, det, num_samples=24, batch_size=5)
    assert a[0].metric == "gfid" and a[0].proxy and "[proxy]" in a[0].label
    assert a[0].value == pytest.approx(b[0].value, rel=1e-9)
    assert a[0].provenance["reference"]["split"] == "train"
