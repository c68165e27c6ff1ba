"""rFID/FID/KID against torch-fidelity and clean-fid on identical inputs and weights (PEERS.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ulbench.cli import main


@pytest.fixture(scope="module")
def ours(two_folders, inception_weights):
    a, b = two_folders
    res = CliRunner().invoke(main, ["fid", a, b, "--weights", inception_weights, "--kid", "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_fid_matches_torch_fidelity(ours, two_folders, inception_weights):
    import torch_fidelity

    a, b = two_folders
    ref = torch_fidelity.calculate_metrics(input1=a, input2=b, fid=True, kid=True, kid_subset_size=16,
                                           feature_extractor_weights_path=inception_weights, cuda=False,
                                           save_cpu_ram=True, verbose=False, batch_size=16)
    assert ours["n_a"] == ours["n_b"] == 16
    assert ours["fid"] > 0.1  # the sets differ: a real distance, not a collapsed detector
    assert ours["fid"] == pytest.approx(ref["frechet_inception_distance"], rel=1e-4)
    # KID is a small difference of O(1) kernel means; torch-fidelity forms them in float32, we in float64
    assert ours["kid"] == pytest.approx(ref["kernel_inception_distance_mean"], abs=1e-6)
    assert ours["warnings"], "16 samples for 2048-d features must carry the rank-deficiency warning"
    prov = ours["provenance"]
    assert prov["detector"] == "inception-v3-compat" and len(prov["detector_weights_sha256"]) == 64


@pytest.fixture(scope="module")
def features(two_folders, inception_weights):
    from ulbench.data.folder import ImageFolderDataset
    from ulbench.evaluation import dataset_features
    from ulbench.metrics.features import InceptionDetector

    det = InceptionDetector(inception_weights)
    return [dataset_features(ImageFolderDataset(f, resolution=None), det) for f in two_folders]


def test_frechet_matches_clean_fid_on_same_features(features):
    from cleanfid.fid import frechet_distance as cf_frechet

    from ulbench.evaluation import stats_of
    from ulbench.metrics.frechet import frechet_distance

    fa, fb = features
    for dims in (slice(0, 10), slice(100, 115)):  # full rank: 16 samples, < 16 dims
        (m1, s1), (m2, s2) = stats_of(fa[:, dims]).mean_cov(), stats_of(fb[:, dims]).mean_cov()
        assert frechet_distance(m1, s1, m2, s2) == pytest.approx(cf_frechet(m1, s1, m2, s2), rel=1e-6)


def test_rank_deficient_frechet_is_exact(features):
    """16 samples, 2048 dims: scipy's sqrtm (clean-fid) warns "singular" and drifts ~1e-6; ours equals the
    closed form Tr((Σ1Σ2)^½) = ‖A1 A2ᵀ‖_* / (n − 1) (A: centred features, ‖·‖_*: nuclear norm) to 1e-9
    and stays within 1e-5 of clean-fid."""
    import warnings

    from cleanfid.fid import frechet_distance as cf_frechet

    from ulbench.evaluation import stats_of
    from ulbench.metrics.frechet import frechet_distance

    (m1, s1), (m2, s2) = stats_of(features[0]).mean_cov(), stats_of(features[1]).mean_cov()
    a1, a2 = features[0] - m1, features[1] - m2
    tr_sqrt = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum() / (len(a1) - 1)
    exact = ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    ours = frechet_distance(m1, s1, m2, s2)
    assert ours == pytest.approx(exact, rel=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ours == pytest.approx(cf_frechet(m1, s1, m2, s2), rel=1e-5)


def test_clean_fid_backend_matches_clean_fid_pipeline(two_folders, inception_weights):
    from cleanfid import fid as cfid

    from ulbench.data.folder import ImageFolderDataset
    from ulbench.evaluation import dataset_features, fid_between
    from ulbench.metrics.features import CleanFidDetector

    det = CleanFidDetector(inception_weights)
    fn = lambda x: torch.from_numpy(det.features_float299(x))  # noqa: E731  clean-fid passes float 0..255
    ref = cfid.compute_fid(two_folders[0], two_folders[1], mode="clean", custom_feat_extractor=fn, num_workers=0,
                           batch_size=16, device=torch.device("cpu"), verbose=False, use_dataparallel=False)
    fa = dataset_features(ImageFolderDataset(two_folders[0], resolution=None), det)
    fb = dataset_features(ImageFolderDataset(two_folders[1], resolution=None), det)
    assert fid_between(fa, fb)["fid"] == pytest.approx(ref, rel=1e-4)


def test_float_path_equals_uint8_path(inception_weights, eval_images):
    from ulbench.metrics.features import InceptionDetector

    det = InceptionDetector(inception_weights)
    x = torch.nn.functional.interpolate(eval_images[:3].float(), size=299, mode="nearest").to(torch.uint8)
    np.testing.assert_allclose(det.features_float299(x.float()), det.features(x), rtol=1e-5, atol=1e-6)


def test_fid_against_npz_reference(two_folders, tmp_path):
    """`ulbench ref` caches (mu, sigma, n) under a name with its protocol; FID against it equals folder FID."""
    res = CliRunner().invoke(main, ["ref", "--data", f"folder:{two_folders[1]}", "--split", "all",
                                    "--resolution", "32", "--detector", "proxy", "--cache-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    npz = res.stdout.strip().splitlines()[-1]
    assert "proxy" in npz and "n16" in npz and "res32" in npz
    a = CliRunner().invoke(main, ["fid", two_folders[0], npz, "--detector", "proxy", "--json"])
    b = CliRunner().invoke(main, ["fid", two_folders[0], two_folders[1], "--detector", "proxy", "--json"])
    assert json.loads(a.stdout)["fid"] == pytest.approx(json.loads(b.stdout)["fid"], rel=1e-9)
