"""Each framework wrapper predicts what its framework predicts, and reads metadata
from the artifact."""

from __future__ import annotations

import joblib
import numpy as np
import onnxruntime as ort
import pytest
import torch

from protos.errors import InferenceError
from wrappers.onnx import ONNXWrapper
from wrappers.pytorch import TorchWrapper
from wrappers.settings import ModelSettings, TensorSpec, load_settings
from wrappers.sklearn import SKLearnWrapper


def test_sklearn_predict_equals_sklearn(credit_models, holdout_x):
    wrapper = SKLearnWrapper(credit_models["lr"])
    wrapper.load()
    out = wrapper.predict({"input": holdout_x})
    model = joblib.load(credit_models["lr"])
    np.testing.assert_array_equal(out["label"], model.predict(holdout_x))
    np.testing.assert_array_equal(out["probabilities"], model.predict_proba(holdout_x))


def test_sklearn_metadata_from_artifact(credit_models):
    wrapper = SKLearnWrapper(credit_models["lr"])
    wrapper.load()
    meta = wrapper.metadata()
    assert meta.platform == "sklearn"
    assert [(t.name, t.datatype, t.shape) for t in meta.inputs] == [("input", "FP32", [-1, 20])]
    assert [(t.name, t.datatype, t.shape) for t in meta.outputs] == [
        ("label", "INT64", [-1]), ("probabilities", "FP64", [-1, 2])]


def test_sklearn_settings_override_and_method_outputs(credit_models, holdout_x):
    settings = ModelSettings(
        name="lr", outputs=[TensorSpec(name="decision_function", datatype="FP64", shape=[-1])])
    wrapper = SKLearnWrapper(credit_models["lr"], settings)
    wrapper.load()
    assert [t.name for t in wrapper.metadata().outputs] == ["decision_function"]
    out = wrapper.predict({"input": holdout_x[:5]})
    model = joblib.load(credit_models["lr"])
    np.testing.assert_array_equal(out["decision_function"], model.decision_function(holdout_x[:5]))


def test_sklearn_bad_artifact(tmp_path):
    (tmp_path / "bad.joblib").write_bytes(b"not a pickle")
    with pytest.raises(InferenceError, match="cannot load sklearn model"):
        SKLearnWrapper(tmp_path / "bad.joblib").load()
    settings = ModelSettings(
        name="x", outputs=[TensorSpec(name="nope", datatype="FP32", shape=[-1])])
    joblib.dump({"not": "a model"}, tmp_path / "cls.joblib")
    with pytest.raises(InferenceError, match="not an estimator"):
        SKLearnWrapper(tmp_path / "cls.joblib", settings).load()


def test_onnx_predict_equals_onnxruntime(credit_models, holdout_x):
    wrapper = ONNXWrapper(credit_models["gbm"])
    wrapper.load()
    out = wrapper.predict({"input": holdout_x})
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # same summation order as the wrapper's session
    session = ort.InferenceSession(str(credit_models["gbm"]), options)
    label, proba = session.run(None, {"input": holdout_x})
    np.testing.assert_array_equal(out["label"], label)
    np.testing.assert_array_equal(out["probabilities"], proba)
    assert out["label"].dtype == np.int64 and out["probabilities"].dtype == np.float32
    # and the converted graph agrees with the sklearn model it came from
    gbm = joblib.load(credit_models["gbm_sklearn"])
    np.testing.assert_array_equal(out["label"], gbm.predict(holdout_x))
    np.testing.assert_allclose(out["probabilities"], gbm.predict_proba(holdout_x), atol=1e-6)


def test_onnx_metadata_from_session(credit_models):
    wrapper = ONNXWrapper(credit_models["gbm"])
    wrapper.load()
    meta = wrapper.metadata()
    assert meta.platform == "onnx_onnxv1"
    assert [(t.name, t.datatype, t.shape) for t in meta.inputs] == [("input", "FP32", [-1, 20])]
    assert [(t.name, t.datatype) for t in meta.outputs] == [
        ("label", "INT64"), ("probabilities", "FP32")]
    assert meta.outputs[0].shape == [-1]
    assert meta.outputs[1].shape in ([-1, 2], [-1, -1])


def test_onnx_bad_artifact(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"garbage")
    with pytest.raises(InferenceError, match="cannot load ONNX model"):
        ONNXWrapper(tmp_path / "bad.onnx").load()


def test_torch_predict_equals_module_forward(credit_models, holdout_x):
    settings = load_settings(credit_models["mlp_settings"])
    wrapper = TorchWrapper(credit_models["mlp"], settings)
    wrapper.load()
    out = wrapper.predict({"input": holdout_x})
    module = torch.jit.load(str(credit_models["mlp"]))
    with torch.no_grad():
        label, proba = module(torch.from_numpy(holdout_x))
    np.testing.assert_array_equal(out["label"], label.numpy())
    np.testing.assert_allclose(out["probabilities"], proba.numpy(), rtol=0, atol=1e-6)
    assert wrapper.metadata().platform == "pytorch_torchscript"
    assert [t.name for t in wrapper.metadata().outputs] == ["label", "probabilities"]


def test_torch_requires_declared_tensors(credit_models):
    with pytest.raises(InferenceError, match="declaring 'inputs' and 'outputs'"):
        TorchWrapper(credit_models["mlp"], ModelSettings(name="mlp"))


class _DictModule(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"double": x * 2, "sum": x.sum(dim=1)}


def test_torch_dict_outputs_by_name(tmp_path):
    path = tmp_path / "dict.pt"
    torch.jit.save(torch.jit.script(_DictModule()), str(path))
    settings = ModelSettings(
        name="d",
        inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 2])],
        outputs=[TensorSpec(name="sum", datatype="FP32", shape=[-1]),
                 TensorSpec(name="double", datatype="FP32", shape=[-1, 2])],
    )
    wrapper = TorchWrapper(path, settings)
    wrapper.load()
    x = np.array([[1, 2], [3, 4]], dtype=np.float32)
    x.setflags(write=False)  # decoded request buffers are read-only
    out = wrapper.predict({"x": x})
    np.testing.assert_array_equal(out["sum"], [3, 7])
    np.testing.assert_array_equal(out["double"], 2 * x)


def test_torch_wrong_output_count(credit_models, holdout_x):
    settings = ModelSettings(
        name="mlp",
        inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 20])],
        outputs=[TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 2])],
    )
    wrapper = TorchWrapper(credit_models["mlp"], settings)
    wrapper.load()
    with pytest.raises(InferenceError, match="returned 2 outputs"):
        wrapper.predict({"input": holdout_x[:2]})


def test_torch_module_error_is_inference_error(credit_models, holdout_x):
    wrapper = TorchWrapper(credit_models["mlp"], load_settings(credit_models["mlp_settings"]))
    wrapper.load()
    bad = holdout_x[:2].copy()
    bad[:, 0] = 99  # category code out of range
    with pytest.raises(InferenceError, match="TorchScript model raised"):
        wrapper.predict({"input": bad})
