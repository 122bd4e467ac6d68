"""Model settings files and the wrapper registry."""

from __future__ import annotations

import pytest

from protos.errors import InferenceError
from wrappers.loader import FRAMEWORKS, build_wrapper, wrapper_class, wrapper_from_settings
from wrappers.onnx import ONNXWrapper
from wrappers.pytorch import TorchWrapper
from wrappers.settings import ModelSettings, SettingsError, load_settings
from wrappers.sklearn import SKLearnWrapper

EXAMPLE = """\
name: credit-mlp
version: "1"
inputs:  [{name: input, datatype: FP32, shape: [-1, 20]}]
outputs: [{name: probabilities, datatype: FP32, shape: [-1, 2]}]
max_batch_size: 64
max_batch_wait_ms: 2
"""


def test_load_example(tmp_path):
    path = tmp_path / "mlp.yaml"
    path.write_text(EXAMPLE + "framework: torch\nuri: mlp.pt\n")
    settings = load_settings(path)
    assert (settings.name, settings.version, settings.max_batch_size) == ("credit-mlp", "1", 64)
    assert settings.max_batch_wait_ms == 2.0
    assert settings.inputs[0].shape == [-1, 20]
    assert settings.uri == str(tmp_path / "mlp.pt")  # made absolute against the file


def test_defaults():
    settings = ModelSettings(name="m")
    assert settings.max_batch_size == 64 and settings.max_batch_wait_ms == 2.0
    assert settings.version is None
    assert all(f.description for f in ModelSettings.model_fields.values())


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("max_batch_size: 0\n", "field 'max_batch_size'"),
        ("max_batch_wait_ms: -1\n", "field 'max_batch_wait_ms'"),
        ("colour: blue\n", "field 'colour'"),
    ],
)
def test_bad_field_is_named(tmp_path, extra, field):
    path = tmp_path / "bad.yaml"
    path.write_text(EXAMPLE.replace("max_batch_size: 64\n", "").replace(
        "max_batch_wait_ms: 2\n", "") + extra)
    with pytest.raises(SettingsError, match=field):
        load_settings(path)


def test_bad_tensor_fields_are_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(EXAMPLE.replace("FP32, shape: [-1, 20]", "FLOAT, shape: [-1, 20]"))
    with pytest.raises(SettingsError, match=r"field 'inputs\.0\.datatype'"):
        load_settings(path)
    dup = tmp_path / "dup.yaml"
    dup.write_text("name: m\ninputs: [{name: a, datatype: FP32, shape: [-1]},"
                   " {name: a, datatype: FP32, shape: [-1]}]\n")
    with pytest.raises(SettingsError, match=r"field 'inputs': .*duplicate tensor names \['a'\]"):
        load_settings(dup)


def test_unreadable_files(tmp_path):
    with pytest.raises(SettingsError, match="cannot read model settings"):
        load_settings(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(SettingsError, match="must be a YAML mapping"):
        load_settings(tmp_path / "list.yaml")


def test_registry_classes():
    assert set(FRAMEWORKS) == {"sklearn", "onnx", "torch"}
    assert wrapper_class("sklearn") is SKLearnWrapper
    assert wrapper_class("onnx") is ONNXWrapper
    assert wrapper_class("torch") is TorchWrapper
    assert wrapper_class("wrappers.onnx:ONNXWrapper") is ONNXWrapper


@pytest.mark.parametrize(
    ("framework", "message"),
    [
        ("tensorflow", "unknown framework 'tensorflow'"),
        ("nowhere.mod:Thing", "cannot import wrapper"),
        ("protos.errors:InferenceError", "is not a ModelWrapper subclass"),
    ],
)
def test_registry_errors(framework, message):
    with pytest.raises(ValueError, match=message):
        wrapper_class(framework)


def test_build_from_settings(credit_models):
    for key, cls in [("lr", SKLearnWrapper), ("gbm", ONNXWrapper), ("mlp", TorchWrapper)]:
        settings = load_settings(credit_models[f"{key}_settings"])
        assert isinstance(wrapper_from_settings(settings), cls)
    with pytest.raises(ValueError, match="need 'framework' and 'uri'"):
        wrapper_from_settings(ModelSettings(name="m"))
    with pytest.raises(InferenceError):
        build_wrapper("torch", credit_models["mlp"], None)


@pytest.mark.parametrize(
    "module",
    ["wrappers.settings", "wrappers.sklearn", "wrappers.onnx", "wrappers.pytorch",
     "wrappers.batching", "wrappers.target", "wrappers.loader"],
)
def test_public_api_is_all(module):
    import importlib

    mod = importlib.import_module(module)
    assert all(hasattr(mod, name) for name in mod.__all__)
