"""The compress settings: JSON round trips, the precedence defaults < target < recipe < flags, and one target per run."""

import json

import pytest

from vledge.compress import CompressConfig, ExportConfig, GateConfig, PruneConfig, compress, resolve_config
from vledge.errors import ConfigError
from vledge.targets import get_target


def _round_trip(config):
    return type(config).from_dict(json.loads(json.dumps(config.to_dict())))


def test_compress_config_round_trips_through_json_with_its_target_by_name():
    config = CompressConfig(target="intel-npu", student="narrow-resnet18-bert2", data="digits", tolerance=0.05,
                            eval_samples=64, static_batch=2, seed=3, cache_dir="/tmp/cache",
                            prune=PruneConfig(ratio=0.25, parts=("mlp_width",), ignored=("text_tower",)))
    data = config.to_dict()
    assert data["target"] == "intel-npu" and data["prune"]["ratio"] == 0.25
    back = _round_trip(config)
    assert back == config and back.target is get_target("intel-npu")
    assert back.to_dict() == data


@pytest.mark.parametrize("config", [ExportConfig(format="openvino", static_batch=1, opset=17), ExportConfig(),
                                    GateConfig(tolerance=0.05, eval_samples=100), GateConfig(),
                                    PruneConfig(ratio=0.5, criterion="l1", round_to=4)])
def test_stage_configs_round_trip_through_json(config):
    assert _round_trip(config) == config


def test_stage_configs_come_from_the_compress_config():
    npu = resolve_config("intel-npu")
    assert npu.export_config() == ExportConfig(format="openvino", static_batch=1)
    assert resolve_config("cpu", overrides={"static_batch": 4}).export_config() == ExportConfig(format="onnx")
    assert resolve_config("cpu", overrides={"tolerance": 0.1}).gate_config() == GateConfig(tolerance=0.1)


def test_later_settings_win_defaults_target_recipe_flags(tmp_path):
    assert CompressConfig(target="intel-npu").static_batch is None  # the default
    assert resolve_config("intel-npu").static_batch == 1  # the target's row
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"target": "cpu", "static_batch": 2, "tolerance": 0.04, "distill": {"epochs": 3}}))
    from_recipe = resolve_config("intel-npu", recipe)
    assert from_recipe.static_batch == 2 and from_recipe.tolerance == 0.04 and from_recipe.distill.epochs == 3
    assert from_recipe.target.name == "intel-npu"  # a recipe never changes the target
    flags = resolve_config("intel-npu", recipe, {"static_batch": 3, "tolerance": None, "distill": {"max_samples": 50}})
    assert flags.static_batch == 3 and flags.tolerance == 0.04  # a flag left out (None) keeps the recipe's
    assert flags.distill.epochs == 3 and flags.distill.max_samples == 50  # nested settings merge key by key


def test_a_bad_setting_is_refused_where_the_config_is_made():
    with pytest.raises(ConfigError, match=r"tolerance is a fraction of top-1 in \[0, 1\) \(0.02 = two points\), got 2"):
        resolve_config("cpu", overrides={"tolerance": 2})
    with pytest.raises(ConfigError, match=r"unknown target 'intel-cpux'\. Did you mean 'intel-cpu'\?"):
        CompressConfig.from_dict({"target": "intel-cpux"})
    with pytest.raises(ConfigError, match=r"ExportConfig.format must be one of onnx, openvino, got 'tflite'"):
        ExportConfig(format="tflite")


def test_compress_refuses_a_target_that_is_not_its_configs(tmp_path):
    with pytest.raises(ConfigError, match=r"compress got target 'intel-cpu' and a config for target 'cpu': pass the "
                                          r"config alone \(its target is used\)"):
        compress(tmp_path / "teacher", out=tmp_path / "bundle", target="intel-cpu", config=resolve_config("cpu"))
    assert not (tmp_path / "bundle.work").exists()  # refused before any work
