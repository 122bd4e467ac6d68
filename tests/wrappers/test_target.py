"""ModelTarget: request validation, datatype conversion, outputs, ids, parameters."""

from __future__ import annotations

import numpy as np
import pytest

from protos.errors import InferenceError, InvalidRequestError, ModelNotReadyError
from protos.protocol import InferenceRequest, RequestedOutput, Target, Tensor
from wrappers.loader import wrapper_from_settings
from wrappers.settings import ModelSettings, load_settings
from wrappers.target import ModelTarget

X3 = np.arange(6, dtype=np.float32).reshape(2, 3)


@pytest.fixture
async def target(doubling):
    t = ModelTarget(doubling, ModelSettings(name="doubling", version="7", max_batch_size=8))
    await t.load()
    yield t
    await t.unload()


def _req(*tensors: Tensor, **kwargs) -> InferenceRequest:
    return InferenceRequest("doubling", list(tensors), **kwargs)


def _x(data, datatype: str | None = None, shape=None, name: str = "x") -> Tensor:
    array = np.asarray(data)
    return Tensor(name, datatype or Tensor.from_array(name, array).datatype,
                  tuple(shape or array.shape), array)


async def test_is_a_target_and_reports_metadata(target):
    assert isinstance(target, Target)
    meta = target.metadata()
    assert (meta.name, meta.versions, meta.platform) == ("doubling", ["7"], "test")
    assert [t.name for t in meta.outputs] == ["y", "rowsum"]


async def test_infer_all_outputs_echo_id_and_parameters(target):
    response = await target.infer(_req(_x(X3), id="42", parameters={"a": 1, "b": "x"}))
    assert (response.model_name, response.model_version, response.id) == ("doubling", "7", "42")
    assert response.parameters == {"a": 1, "b": "x"}
    y = response.output("y")
    assert (y.datatype, y.shape) == ("FP32", (2, 3))
    np.testing.assert_array_equal(y.data, 2 * X3)
    np.testing.assert_array_equal(response.output("rowsum").data, [3.0, 12.0])


async def test_generates_id_when_absent(target):
    first = await target.infer(_req(_x(X3)))
    second = await target.infer(_req(_x(X3)))
    assert first.id and second.id and first.id != second.id


async def test_requested_outputs_and_their_parameters(target):
    request = _req(_x(X3), outputs=[RequestedOutput("rowsum", {"binary_data": True})])
    response = await target.infer(request)
    assert [o.name for o in response.outputs] == ["rowsum"]
    assert response.outputs[0].parameters == {"binary_data": True}


async def test_not_ready(doubling):
    t = ModelTarget(doubling, ModelSettings(name="doubling"))
    assert not t.ready()
    with pytest.raises(ModelNotReadyError, match="'doubling' is not ready"):
        await t.infer(_req(_x(X3)))
    await t.load()
    assert t.ready() and doubling.loaded
    await t.unload()
    assert not t.ready()


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ([_x(X3, name="z")], r"unknown input 'z' for model 'doubling'; expected inputs \['x'\]"),
        ([_x(X3), _x(X3)], "input 'x' is given twice"),
        ([], r"missing inputs \['x'\]"),
        ([_x(X3[0])], r"input 'x' has rank 1 \(shape \[3\]\); expected rank 2"),
        ([_x(np.zeros((2, 4), np.float32))], r"input 'x' has shape \[2, 4\]; expected \[-1, 3\]"),
        ([_x(np.zeros((0, 3), np.float32))], r"input 'x' is empty"),
        ([_x(X3, shape=(3, 3))], "input 'x' has 6 values; shape"),
        ([_x(np.array([[b"a", b"b", b"c"]], dtype=object), "BYTES")],
         "input 'x' has datatype BYTES; model expects FP32"),
        ([_x(np.ones((1, 3), bool))], "input 'x' has datatype BOOL; model expects FP32"),
        ([_x(np.array([[2**40 + 1, 0, 0]], np.int64))],
         "input 'x': INT64 values are not exactly representable as FP32"),
    ],
)
async def test_invalid_requests(target, tensors, message):
    with pytest.raises(InvalidRequestError, match=message):
        await target.infer(_req(*tensors))


async def test_unknown_requested_output(target):
    with pytest.raises(InvalidRequestError, match="unknown output 'nope' requested"):
        await target.infer(_req(_x(X3), outputs=[RequestedOutput("nope")]))


async def test_int32_converted_losslessly(target, doubling):
    ints = np.array([[1, -2, 2**24]], dtype=np.int32)
    response = await target.infer(_req(_x(ints)))
    assert response.output("y").data.dtype == np.float32
    np.testing.assert_array_equal(response.output("y").data, 2 * ints.astype(np.float32))


async def test_lossless_int64_and_fp64_accepted(target):
    response = await target.infer(_req(_x(np.array([[2**40, 1, 0]], np.int64))))
    assert response.output("y").data[0, 0] == 2.0**41
    response = await target.infer(_req(_x(np.array([[0.5, 1.25, -3.0]]))))
    np.testing.assert_array_equal(response.output("y").data, [[1.0, 2.5, -6.0]])
    with pytest.raises(InvalidRequestError, match="FP64 values are not exactly representable"):
        await target.infer(_req(_x(np.array([[0.1, 0.0, 0.0]]))))


async def test_non_finite_inputs_reach_the_model(target):
    x = np.array([[np.nan, np.inf, -np.inf]], np.float32)
    response = await target.infer(_req(_x(x)))
    np.testing.assert_array_equal(response.output("y").data, 2 * x)
    # and through a conversion too
    response = await target.infer(_req(_x(x.astype(np.float64))))
    np.testing.assert_array_equal(response.output("y").data, 2 * x)


async def test_inputs_disagreeing_on_batch(doubling):
    class TwoInputs(type(doubling)):
        def metadata(self):
            meta = super().metadata()
            meta.inputs.append(type(meta.inputs[0])("w", "FP32", [-1]))
            return meta

    t = ModelTarget(TwoInputs(), ModelSettings(name="two"))
    await t.load()
    w = Tensor.from_array("w", np.ones(3, np.float32))
    with pytest.raises(InvalidRequestError, match="disagree on the batch size"):
        await t.infer(_req(_x(X3), w))


async def test_missing_model_output_is_inference_error(doubling):
    t = ModelTarget(doubling, ModelSettings(name="d"))
    await t.load()
    t._outputs["ghost"] = (t._outputs["y"][0], t._outputs["y"][1])  # declared, never produced
    with pytest.raises(InferenceError, match="did not produce output 'ghost'"):
        await t.infer(_req(_x(X3), outputs=[RequestedOutput("ghost")]))


async def test_model_error_is_inference_error(target, doubling):
    doubling.fail = ZeroDivisionError("boom")
    with pytest.raises(InferenceError, match="ZeroDivisionError: boom"):
        await target.infer(_req(_x(X3)))


@pytest.mark.parametrize("model", ["lr", "gbm", "mlp"])
async def test_credit_models_served_equal_wrapper_predict(credit_models, holdout_x, model):
    settings = load_settings(credit_models[f"{model}_settings"])
    target = ModelTarget(wrapper_from_settings(settings), settings)
    await target.load()
    response = await target.infer(InferenceRequest(settings.name, [
        Tensor.from_array("input", holdout_x)]))
    reference = wrapper_from_settings(settings)
    reference.load()
    expected = reference.predict({"input": holdout_x})
    label, proba = response.output("label"), response.output("probabilities")
    assert (label.datatype, label.shape) == ("INT64", (200,))
    assert (proba.datatype, proba.shape) == ("FP32", (200, 2))
    np.testing.assert_array_equal(label.data, expected["label"])
    np.testing.assert_allclose(proba.data, expected["probabilities"], rtol=0, atol=1e-6)
    await target.unload()
