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
    ref = torch_fidelity.calculate_metrics(input1=a, input2=b, fid=True, kid=True, kid_subset_size=24,
                                           feature_extractor_weights_path=inception_weights, cuda=False,
                                           save_cpu_ram=True, verbose=False, batch_size=16)
    assert ours["n_a"] == ours["n_b"] == 24
    assert ours["fid"] > 0.1  # the sets differ: a real distance, not a collapsed detector
    assert ours["fid"] == pytest.approx(ref["frechet_inception_distance"], rel=1e-4)
    assert ours["kid"] == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-4, abs=1e-9)
    assert ours["warnings"], "24 samples for 2048-d features must carry the rank-deficiency warning"
    prov = ours["provenance"]
    assert prov["detector"] == "inception-v3-compat" and len(prov["detector_weights_sha256"]) == 64


def test_frechet_matches_clean_fid_on_same_features(two_folders, inception_weights):
    from cleanfid.fid import frechet_distance as cf_frechet

    from ulbench.data.folder import ImageFolderDataset
    from ulbench.evaluation import dataset_features, stats_of
    from ulbench.metrics.features import InceptionDetector
    from ulbench.metrics.frechet import frechet_distance

    det = InceptionDetector(inception_weights)
    fa = dataset_features(ImageFolderDataset(two_folders[0], resolution=None), det)
    fb = dataset_features(ImageFolderDataset(two_folders[1], resolution=None), det)
    # full-rank case (more samples than dims) and the rank-deficient 2048-d case
    for sl in (slice(0, 16), slice(None)):
        (m1, s1), (m2, s2) = stats_of(fa[:, sl]).mean_cov(), stats_of(fb[:, sl]).mean_cov()
        assert frechet_distance(m1, s1, m2, s2) == pytest.approx(cf_frechet(m1, s1, m2, s2), rel=1e-6)


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


def test_fid_against_npz_reference(two_folders, inception_weights, tmp_path):
    res = CliRunner().invoke(main, ["ref", "--data", f"folder:{two_folders[1]}", "--split", "all",
                                    "--resolution", "32", "--weights", inception_weights,
                                    "--cache-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    npz = res.stdout.strip().splitlines()[-1]
    assert "inception-v3-compat" in npz and "n24" in npz and "res32" in npz
    a = CliRunner().invoke(main, ["fid", two_folders[0], npz, "--weights", inception_weights, "--json"])
    b = CliRunner().invoke(main, ["fid", two_folders[0], two_folders[1], "--weights", inception_weights, "--json"])
    assert json.loads(a.stdout)["fid"] == pytest.approx(json.loads(b.stdout)["fid"], rel=1e-9)
