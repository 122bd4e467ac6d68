"""The gateway config's explain block: per-model methods are checked against the routed
models, and every path (reference data and outcomes, encoding, artifacts) is taken
relative to the config file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.config import load_config


def _write(tmp_path: Path, explain: dict) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({
        "models": {"lr": {"url": "http://127.0.0.1:1", "name": "lr"},
                   "gbm": {"url": "http://127.0.0.1:2", "name": "gbm"}},
        "deployments": {"credit": {
            "router": {"kind": "weighted", "weights": {"lr": 1, "gbm": 1}},
            "explain": explain,
        }},
    }))
    return path


def test_a_model_explained_locally_without_its_artifact_is_refused_naming_the_field(
        tmp_path: Path) -> None:
    path = _write(tmp_path, {
        "method": "kernel_shap", "methods": {"gbm": "tree_shap"},
        "encoding": "models/encoding.json", "reference_data": "models/reference.npy",
    })
    with pytest.raises(ValueError, match=r"deployments\.credit\.explain: methods\.gbm"):
        load_config(path)
    path = _write(tmp_path, {  # the default method, for a routed model with no artifact
        "method": "tree_shap", "encoding": "models/encoding.json",
        "model_artifact": {"gbm": "models/gbm.joblib"},
    })
    with pytest.raises(ValueError, match=r"deployments\.credit\.explain\.model_artifact "
                                         r"lacks 'lr' \(tree_shap"):
        load_config(path)


def test_every_explain_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    path = _write(tmp_path, {
        "method": "kernel_shap", "methods": {"gbm": "tree_shap"},
        "encoding": "models/encoding.json", "reference_data": "models/reference.npy",
        "reference_outcomes": "models/reference_outcomes.npy",
        "model_artifact": {"gbm": "models/gbm.joblib"},
    })
    explain = load_config(path).deployments["credit"].explain
    models = tmp_path / "models"
    assert explain.reference_outcomes == models / "reference_outcomes.npy"
    assert explain.reference_data == models / "reference.npy"
    assert explain.encoding == models / "encoding.json"
    assert explain.model_artifact == {"gbm": models / "gbm.joblib"}
