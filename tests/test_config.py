"""Process config: defaults, YAML layers and precedence, unknown keys, validation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from conftest import write_survey_yaml

from cracksurvey.config import (
    ProcessConfig,
    TilingConfig,
    build_config,
    parse_set_options,
)
from cracksurvey.errors import ConfigError
from cracksurvey.io.survey_files import PRESET_DIR, load_process_config, read_yaml

DEFAULT_YAML = PRESET_DIR / "default.yaml"


def test_default_yaml_is_exactly_the_defaults() -> None:
    mapping = yaml.safe_load(DEFAULT_YAML.read_text())
    assert mapping == ProcessConfig().to_dict()  # every key documented, same values
    assert load_process_config(preset="default") == ProcessConfig()


def test_defaults() -> None:
    cfg = ProcessConfig()
    assert (cfg.tiling.tile_px, cfg.tiling.halo_px, cfg.tiling.core_px) == (1280, 96, 1088)
    assert cfg.model.weights is None and cfg.model.device == "auto"
    assert (cfg.cpp.patch_px, cfg.cpp.min_area_px) == (256, 50)
    assert cfg.survey.crs is None and cfg.engine.scheduler is None


def test_to_dict_round_trips_and_is_json() -> None:
    cfg = build_config(
        [("x", {"damage": {"scale": "strict.yaml"}, "survey": {"gsd_mm": 1, "district": "Centro"}})]
    )
    data = cfg.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["damage"]["scale"] == "strict.yaml" and data["survey"]["district"] == "Centro"
    assert ProcessConfig.from_dict(data) == cfg
    assert cfg.survey.gsd_mm == 1.0 and isinstance(cfg.survey.gsd_mm, float)


def test_config_is_frozen() -> None:
    cfg = ProcessConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.tiling.tile_px = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("layer", "key", "hint", "allowed"),
    [
        ({"tilng": {}}, "'tilng'", "did you mean 'tiling'", "cpp, damage, engine, model"),
        (
            {"tiling": {"tile_size": 5}},
            "'tiling.tile_size'",
            "did you mean 'tile_px'",
            "halo_px, tile_px",
        ),
        (
            {"model": {"weight": "x"}},
            "'model.weight'",
            "did you mean 'weights'",
            "device, precision, threshold_px, weights",
        ),
        ({"survey": {"zzz": 1}}, "'survey.zzz'", "", "crs, district, gsd_mm"),
    ],
)
def test_unknown_keys_name_file_key_and_allowed_keys(
    tmp_path: Path, layer: dict, key: str, hint: str, allowed: str
) -> None:
    path = write_survey_yaml(tmp_path / "survey.yaml", layer)
    with pytest.raises(ConfigError) as info:
        load_process_config(survey_yaml=path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert f"unknown key {key}" in message
    assert hint in message
    assert allowed in message
    if not hint:
        assert "did you mean" not in message


def test_precedence_cli_over_config_over_survey_over_preset(tmp_path: Path) -> None:
    preset = write_survey_yaml(
        tmp_path / "preset.yaml",
        {"tiling": {"tile_px": 512, "halo_px": 96}, "cpp": {"patch_px": 128}},
    )
    survey = write_survey_yaml(tmp_path / "survey.yaml", {"tiling": {"tile_px": 768}})
    config = write_survey_yaml(tmp_path / "run.yaml", {"tiling": {"halo_px": 64}})
    cfg = load_process_config(
        preset=preset,
        survey_yaml=survey,
        config_path=config,
        overrides={"cpp": {"patch_px": 64}},
    )
    assert cfg.tiling == TilingConfig(tile_px=768, halo_px=64)
    assert cfg.cpp.patch_px == 64
    assert cfg.cpp.min_area_px == 50  # untouched default
    assert cfg.vectorize == ProcessConfig().vectorize


@pytest.mark.parametrize(
    ("layer", "expected"),
    [
        ({"tiling": {"tile_px": "big"}}, "tiling.tile_px='big' is not valid; expected integer"),
        ({"tiling": {"tile_px": True}}, "expected integer"),
        ({"tiling": {"tile_px": 512.0}}, "expected integer"),
        ({"model": {"precision": "fp16"}}, "expected 'auto' | 'bf16' | 'fp32'"),
        ({"model": {"device": "gpu"}}, "use auto, cpu, cuda, cuda:N or mps"),
        ({"tiling": {"halo_px": 32}}, "halo_px=32 is below 64"),
        ({"survey": {"crs": "EPSG:999999"}}, "not a CRS"),
        ({"survey": {"gsd_mm": 0}}, "survey.gsd_mm=0.0 must be > 0"),
        ({"damage": {"scale": ""}}, "damage.scale is empty"),
        ({"damage": {"scale": 3}}, "damage.scale=3 is not valid; expected string"),
        ({"engine": {"workers": 0}}, "engine.workers=0 must be > 0"),
        ({"tiling": [1, 2]}, "section 'tiling' must be a mapping"),
        ([1, 2], "expected a mapping of sections"),
    ],
)
def test_invalid_values_name_the_source(layer: object, expected: str) -> None:
    with pytest.raises(ConfigError, match="^my.yaml") as info:
        build_config([("my.yaml", layer)])  # type: ignore[list-item]
    assert expected in str(info.value)


def test_invalid_combination_names_every_layer_involved() -> None:
    with pytest.raises(ConfigError) as info:
        build_config(
            [("a.yaml", {"tiling": {"tile_px": 200}}), ("b.yaml", {"tiling": {"halo_px": 90}})]
        )
    assert str(info.value).startswith("a.yaml, b.yaml: tiling.tile_px=200 leaves a core window")


def test_null_section_and_empty_file_are_no_change(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    assert read_yaml(empty) is None
    assert load_process_config(config_path=empty) == ProcessConfig()
    assert build_config([("x", {"tiling": None})]) == ProcessConfig()


def test_invalid_yaml_gives_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("tiling:\n  tile_px: 512\n halo_px: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line \d+ column \d+: invalid YAML"):
        load_process_config(config_path=bad)


def test_unknown_preset_lists_presets() -> None:
    with pytest.raises(ConfigError, match=r"unknown preset 'fastest'.*default"):
        load_process_config(preset="fastest")


def test_parse_set_options() -> None:
    layer = parse_set_options(
        [
            "tiling.tile_px=512",
            "model.weights=null",
            "damage.scale=strict.yaml",
            "engine.scheduler=tcp://h:8786",
        ]
    )
    assert layer == {
        "tiling": {"tile_px": 512},
        "model": {"weights": None},
        "damage": {"scale": "strict.yaml"},
        "engine": {"scheduler": "tcp://h:8786"},
    }
    assert build_config([("command line", layer)]).tiling.tile_px == 512
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_set_options(["tile_px=512"])


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ConfigError, match="halo_px"):
        TilingConfig(halo_px=10)


def test_yaml_on_off_reach_mode_settings_as_words():
    """YAML 1.1 reads a bare off/on as a boolean: mode-like settings take them as the words."""
    from cracksurvey.config import ProcessConfig, parse_set_options

    config = ProcessConfig.from_dict(
        parse_set_options(["semantics.mode=off", "semantics.fill=off"])
    )
    assert config.semantics.mode == "off" and config.semantics.fill == "off"
    assert ProcessConfig.from_dict({"semantics": {"mode": True}}).semantics.mode == "on"
