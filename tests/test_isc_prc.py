"""Inception Score and precision/recall (k=3) against torch-fidelity on identical inputs and weights; additive state
independent of batching and shards; the proxy is refused for IS; the generator path (gis, gprc)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ulbench.cli import main
from ulbench.protocols import Batch


@pytest.fixture(scope="module")
def isc_weights(inception_weights, tmp_path_factory) -> str:
    """The kaiming Inception with its classifier scaled ×100: default-init fc gives logits spread ~0.02, so every
    p(y|x) is near uniform and IS ≈ 1.0001 whatever the images; ×100 makes IS respond to them (pool features and
    FID are unchanged)."""
    state = torch.load(inception_weights, weights_only=True)
    state["fc.weight"] = state["fc.weight"] * 100
    path = tmp_path_factory.mktemp("isc_weights") / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    return str(path)


@pytest.fixture(scope="module")
def ours(two_folders, isc_weights):
    a, b = two_folders
    res = CliRunner().invoke(main, ["fid", a, b, "--weights", isc_weights, "--isc", "--prc", "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def theirs(two_folders, isc_weights):
    import torch_fidelity

    a, b = two_folders
    # prc on Inception pool features (ADM's evaluator's choice; torch-fidelity's default extractor for prc is VGG-16)
    return torch_fidelity.calculate_metrics(input1=a, input2=b, isc=True, prc=True, cuda=False, batch_size=16,
                                            feature_extractor="inception-v3-compat", feature_layer_prc="2048",
                                            feature_extractor_weights_path=isc_weights, save_cpu_ram=True,
                                            verbose=False)


def test_is_and_precision_recall_match_torch_fidelity(ours, theirs):
    assert ours["n_a"] == ours["n_b"] == 16
    # measured: |ΔIS| / IS = 2.5e-8 and 1.6e-6 for its std over splits (we form the logits from the pool features in
    # float64, torch-fidelity in float32 inside the network); the tolerances leave a margin of 40× and 60×
    assert ours["is"] == pytest.approx(theirs["inception_score_mean"], rel=1e-6)
    assert ours["is_std"] == pytest.approx(theirs["inception_score_std"], rel=1e-4)
    assert ours["is"] > 1.03, "a diverse set must score above 1: otherwise the logits collapsed"
    # precision/recall are counts over 16 images: equal exactly (same float32 features, same cdist kernels)
    assert ours["precision"] == theirs["precision"] and ours["recall"] == theirs["recall"]
    assert 0 < ours["precision"] + ours["recall"] < 2, "the two sets differ: neither 0/0 nor 1/1"


@pytest.fixture(scope="module")
def features(two_folders, isc_weights):
    from ulbench.data.folder import ImageFolderDataset
    from ulbench.evaluation import dataset_features
    from ulbench.metrics.features import InceptionDetector

    det = InceptionDetector(isc_weights)
    return det, [dataset_features(ImageFolderDataset(f, resolution=None), det) for f in two_folders]


def _feed(metric, det, fa, fb, batch_size, shards=1):
    """Feed precomputed features as batches (cache prefilled: no network) over `shards` merged states."""
    parts = []
    for idx in np.array_split(np.arange(len(fa)), shards):
        m = type(metric)(detector=det, num_items=len(fa))
        for s in range(0, len(idx), batch_size):
            chunk = idx[s:s + batch_size]
            batch = Batch(indices=chunk)
            batch.cache[Batch.feature_key(det, "fake")] = fa[chunk]
            batch.cache[Batch.feature_key(det, "real")] = fb[chunk]
            m.update(batch)
        parts.append(m)
    for other in parts[1:]:
        parts[0].merge(other)
    return {k: v.value for k, v in parts[0].compute().items()}


def test_metric_state_is_batch_and_shard_independent_and_equals_cli(features, ours):
    from ulbench.metrics.isc_prc import InceptionScore, PrecisionRecall

    det, (fa, fb) = features
    for cls in (InceptionScore, PrecisionRecall):
        metric = cls(detector=det, num_items=16)
        whole = _feed(metric, det, fa, fb, 16)
        for other in (_feed(metric, det, fa, fb, 5), _feed(metric, det, fa, fb, 3, shards=3)):
            assert other.keys() == whole.keys()  # logits are a per-batch matmul: equal up to float rounding
            assert all(other[k] == pytest.approx(whole[k], rel=1e-12) for k in whole)
        for key, value in whole.items():
            assert value == pytest.approx(ours[key], rel=1e-12)
    assert InceptionScore(detector=det, num_items=16).label == "IS[inception-v3-compat]"
    assert PrecisionRecall(detector=det, num_items=16).row_label("recall") == "recall[inception-v3-compat]"


def test_is_of_one_repeated_image_is_one(features, eval_images):
    """Not silently ignored: one image repeated has p(y|x) = p(y), IS = 1; the diverse set scores clearly above."""
    from ulbench.metrics.isc_prc import inception_logits, inception_score

    det, (fa, _) = features
    same = det.features(eval_images[5:6].repeat(12, 1, 1, 1))
    assert inception_score(inception_logits(det, same))[0] == pytest.approx(1.0, abs=1e-9)
    assert inception_score(inception_logits(det, fa))[0] > 1.03
    assert inception_score(inception_logits(det, fa), splits=1)[0] > 1.1  # one split: the whole set's diversity


def test_is_refuses_the_proxy_and_prc_labels_it():
    from ulbench.metrics.features import ProxyDetector
    from ulbench.metrics.isc_prc import InceptionScore, PrecisionRecall

    with pytest.raises(ValueError, match="proxy"):
        InceptionScore(detector=ProxyDetector(), num_items=8)
    assert PrecisionRecall(detector=ProxyDetector(), num_items=8).row_label("precision") == "precision[proxy]"
    res = CliRunner().invoke(main, ["eval", "--space", "pixel", "--metrics", "is", "--detector", "proxy",
                                    "--limit", "12"])
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and "Traceback" not in res.output
    assert len(res.stderr.strip().splitlines()) == 1 and "proxy" in res.stderr


def test_eval_prc_rows_on_reconstructions():
    """pixel reconstructs exactly: precision = recall = 1; rows name the detector and are marked proxy."""
    res = CliRunner().invoke(main, ["eval", "--space", "pixel", "--metrics", "prc,psnr", "--detector", "proxy",
                                    "--limit", "24", "--json", "--batch-size", "7", "--no-cache"])
    assert res.exit_code == 0, res.output
    rows = {r["metric"]: r for r in map(json.loads, res.stdout.splitlines())}
    assert rows["precision"]["value"] == rows["recall"]["value"] == 1.0
    assert rows["precision"]["label"] == "precision[proxy]" and rows["recall"]["proxy"] is True
    assert rows["recall"]["provenance"]["prc_neighborhood"] == 3 and rows["recall"]["n"] == 24


class _ReplayGenerator:
    """Samples = dataset images picked by seed: deterministic per sample, no training."""

    name = "replay"

    def __init__(self, images: torch.Tensor):
        self.images = images

    def sample(self, seeds: torch.Tensor, class_probs=None) -> torch.Tensor:
        return self.images[(seeds % len(self.images)).long()]

    def info(self) -> dict:
        return {"kind": "replay"}


def test_generator_prc_is_batch_independent():
    from ulbench.data.base import Subset
    from ulbench.data.embedded import embedded_photos
    from ulbench.evaluation import eval_generator
    from ulbench.metrics.features import ProxyDetector

    ref = Subset(embedded_photos("train"), 40)
    gen, det = _ReplayGenerator(ref.get(np.arange(40))[0]), ProxyDetector()
    a = eval_generator(gen, ref, det, num_samples=30, batch_size=30, metrics=("gfid", "gprc"))
    b = eval_generator(gen, ref, det, num_samples=30, batch_size=7, metrics=("gfid", "gprc"))
    va, vb = ({r.metric: r.value for r in rows} for rows in (a, b))
    assert set(va) == {"gfid", "gprecision", "grecall"} and va == pytest.approx(vb, rel=1e-12)
    assert va["gprecision"] == 1.0  # every sample is a reference image
    with pytest.raises(ValueError, match="proxy"):
        eval_generator(gen, ref, det, num_samples=30, metrics=("gis",))
