"""ULConfig presets, typed overrides, hashing, and that every preset builds (UL-SPEC §5 working range)."""

import json
import warnings

import pytest

from ul_models.config import ULConfig
from ul_models.model import build_stage1
from ul_models.nets import count_params


def test_tiny_defaults_sit_in_the_working_range():
    cfg = ULConfig.preset("tiny")
    assert cfg.c_lf > 1 and cfg.c_lf == 10.0 and cfg.bias_b == 0.0 and cfg.lambda0 == 5.0
    assert cfg.latent_shape == (4, 8, 8) and cfg.resolution == 32
    model = build_stage1(cfg)
    parts = {k: count_params(getattr(model, k)) for k in ("encoder", "prior", "decoder")}
    assert 0.3e6 < sum(parts.values()) < 0.8e6, parts


def test_replace_from_strings_parses_types():
    cfg = ULConfig.preset("tiny").replace_from_strings(
        [
            "c_lf=30",
            "bias_b=-2",
            "separate_prior=true",
            "latent_channels=8",
            "decoder_channels=16,32",
            "data=embedded-textures",
            "steps=5",
        ]
    )
    assert cfg.c_lf == 30.0 and isinstance(cfg.c_lf, float) and cfg.bias_b == -2.0
    assert cfg.separate_prior is True and cfg.latent_channels == 8 and cfg.decoder_channels == (16, 32)
    assert cfg.data == "embedded-textures" and cfg.steps == 5


def test_unknown_key_and_bad_values_raise_valueerror_with_hints():
    cfg = ULConfig.preset("tiny")
    with pytest.raises(ValueError, match="Did you mean 'c_lf'"):
        cfg.replace_from_strings(["c_fl=3"])
    with pytest.raises(ValueError, match="Did you mean 'bias_b'"):
        ULConfig.preset("tiny", bias=1.0)
    with pytest.raises(ValueError, match="expected int"):
        cfg.replace_from_strings(["steps=many"])
    with pytest.raises(ValueError, match="key=value"):
        cfg.replace_from_strings(["steps"])
    with pytest.raises(ValueError, match="Did you mean 'tiny'"):
        ULConfig.preset("tinny")
    with pytest.raises(ValueError, match="power of two"):
        ULConfig.preset("tiny", downsample_factor=3)
    with pytest.raises(ValueError, match="lambda_min < lambda0"):
        ULConfig.preset("tiny", lambda0=-12.0)
    with pytest.raises(ValueError, match="embedded"):
        ULConfig.preset("tiny", data="embeded")


def test_folder_data_and_collapse_warning():
    assert ULConfig.preset("tiny", data="folder:/data/imagenet").data == "folder:/data/imagenet"
    with pytest.warns(UserWarning, match="collapsed"):
        ULConfig.preset("tiny", c_lf=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ULConfig.preset("tiny", c_lf=3.0)


def test_hash_and_dict_round_trip():
    cfg = ULConfig.preset("tiny")
    h = cfg.config_hash()
    assert len(h) == 12 and int(h, 16) >= 0
    assert ULConfig.preset("tiny").config_hash() == h
    assert ULConfig.preset("tiny", c_lf=30.0).config_hash() != h
    back = ULConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.config_hash() == h


@pytest.mark.parametrize(
    "override",
    [{"downsample_factor": 8}, {"downsample_factor": 2, "latent_channels": 2}, {"learned_variance": True}],
)
def test_shape_switches_build(override):
    cfg = ULConfig.preset("tiny", **override)
    model = build_stage1(cfg)
    assert model.encoder.downsample_factor == cfg.downsample_factor


@pytest.mark.parametrize("scale,latent", [("small", (8, 16, 16)), ("paper", (32, 32, 32))])
def test_large_presets_build_on_cpu(scale, latent):
    cfg = ULConfig.preset(scale)
    assert cfg.latent_shape == latent
    model = build_stage1(cfg)
    assert model.encoder.downsample_factor == cfg.downsample_factor
    assert count_params(model) > 10 * count_params(build_stage1(ULConfig.preset("tiny")))
