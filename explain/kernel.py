"""Kernel SHAP for black-box models, batched across decisions (kernel_shap).

Alibi 0.9.4's ``KernelShap`` (on shap 0.42.1's ``KernelExplainer``) explains one row
with one model call of ``nsamples x background`` synthetic rows, then averages the
outputs per coalition in a Python loop. :class:`KernelShapExplainer` keeps Alibi's
fitting (the same background, the same link) and shap's own sampling and solver, and
changes only when the model is called: it samples the coalitions of EVERY row of a batch
first, evaluates the rows and all their coalitions in ONE model call (split only to stay
under ``max_rows_per_call`` rows), then finishes each row with shap's ``solve``. The
per-coalition averages are computed in the same order of operations as shap's loop, so
for a model whose output for a row does not depend on the other rows of its batch the
SHAP values equal Alibi's to the last bit (tested to 1e-9; the documented tolerance is
1e-6, for float32 models whose kernels vary in the last bit with the batch size).

Source: Lundberg and Lee, "A Unified Approach to Interpreting Model Predictions",
NeurIPS 2017 (Kernel SHAP).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from alibi.explainers import KernelShap
from alibi.explainers.shap_wrappers import KernelExplainerWrapper

from explain.alibi import PredictorSlot, categorical, check_reference
from explain.base import (
    BatchExplainer,
    ExplainerError,
    Explanation,
    FeatureSchema,
    PredictFn,
)
from explain.reasons import ReasonWriter
from explain.shapley import shap_explanation

__all__ = ["KernelShapExplainer", "MAX_ROWS_PER_CALL"]

MAX_ROWS_PER_CALL = 262_144
"""Most rows (explained rows plus their coalitions) evaluated in one model call; about
21 MB of float32 rows at 20 features. A batch needing more is sent as several calls."""

_SAMPLING_STATE = (
    "maskMatrix", "kernelWeights", "nsamples", "max_samples", "M", "varyingInds", "l1_reg",
    "nsamplesAdded",
)
"""What shap's ``explain`` has set when it reaches the model call, and ``solve`` reads."""


@dataclass(slots=True)
class _Coalitions:
    """The synthetic rows of one explained row and the sampling state that made them."""

    rows: np.ndarray
    state: dict[str, Any]


class _Deferred(Exception):  # noqa: N818 - control flow, not an error
    """Raised by :meth:`_DeferredKernelExplainer.run` to hand the coalitions back."""

    def __init__(self, coalitions: _Coalitions) -> None:
        super().__init__("model call deferred")
        self.coalitions = coalitions


class _DeferredKernelExplainer(KernelExplainerWrapper):
    """shap's KernelExplainer whose evaluation of the coalitions is done by the caller."""

    def run(self) -> None:
        """Instead of calling the model: raise :class:`_Deferred` with the rows to run."""
        start, stop = self.nsamplesRun * self.N, self.nsamplesAdded * self.N
        rows = np.asarray(self.synth_data[start:stop], dtype=np.float32)
        state = {name: getattr(self, name) for name in _SAMPLING_STATE}
        raise _Deferred(_Coalitions(rows, state))

    def resume(self, coalitions: _Coalitions, fx: np.ndarray, outputs: np.ndarray) -> np.ndarray:
        """Finish an explanation from the model's outputs.

        Args:
            coalitions: what :meth:`run` handed back.
            fx: the model's output for the explained row, ``[outputs]``.
            outputs: the model's outputs for ``coalitions.rows``, ``[rows, outputs]``.

        Returns:
            SHAP values ``[n_features, outputs]`` (zero for features that never vary).
        """
        for name, value in coalitions.state.items():
            setattr(self, name, value)
        self.fx = np.asarray(fx)
        y = np.asarray(outputs, dtype=np.float64).reshape(-1, self.N, self.D)
        self.ey = np.zeros((self.nsamples, self.D))
        means = self.ey[: len(y)]
        for j in range(self.N):  # shap's order of additions, vectorised over coalitions
            means += y[:, j, :] * self.data.weights[j]
        self.nsamplesRun = self.nsamplesAdded
        phi = np.zeros((self.data.groups_size, self.D))
        for d in range(self.D):
            phi[self.varyingInds, d] = self.solve(self.nsamples / self.max_samples, d)[0]
        return phi


class _BatchedKernelShap(KernelShap):
    """Alibi's KernelShap (same fitting and background) on the deferred explainer."""

    def _init_shap_object(self) -> _DeferredKernelExplainer:
        return _DeferredKernelExplainer(self.predictor, self.background_data, link=self.link)


class KernelShapExplainer(BatchExplainer):
    """SHAP values of Alibi's ``KernelShap`` for the predicted class, batched.

    The background is the reference summarised to ``background_size`` rows (shap's
    sampling with its fixed random_state). The model is first called, on the
    background, by the first explanation (fitting needs the model; the result is kept).
    For each row the result equals ``KernelShap(predict_fn, link, feature_names,
    category_map, seed=seed).fit(reference, summarise_background=True,
    n_background_samples=...)`` followed by ``np.random.seed(seed)`` and
    ``explain(row, nsamples=...)``; a batch of rows costs one model call.
    """

    method = "kernel_shap"

    def __init__(
        self,
        model: str,
        schema: FeatureSchema,
        *,
        seed: int = 0,
        nsamples: int | str = "auto",
        link: str = "identity",
        background_size: int = 100,
        max_rows_per_call: int = MAX_ROWS_PER_CALL,
        reasons: Any = None,
    ) -> None:
        super().__init__(model, schema, ReasonWriter(schema) if reasons is None else reasons)
        self.seed = seed
        self.nsamples = nsamples
        self.link = link
        self.background_size = background_size
        self.max_rows_per_call = max_rows_per_call
        self._slot = PredictorSlot(label_output=False)
        self._reference: np.ndarray | None = None
        self._shap: _BatchedKernelShap | None = None

    def fit(self, reference: np.ndarray) -> None:
        check_reference(reference, self.schema)
        self._reference = np.asarray(reference, dtype=np.float32)
        self._shap = None

    def parameters(self) -> dict[str, Any]:
        return {"nsamples": self.nsamples, "link": self.link,
                "background_size": self.background_size, "l1_reg": "auto"}

    def explain_batch(self, rows: np.ndarray, predict_fn: PredictFn | None) -> list[Explanation]:
        """Explain ``rows`` with one model call (see the module docstring)."""
        if self._reference is None:
            raise ExplainerError("kernel_shap explainer is not fitted")
        if predict_fn is None:
            raise ExplainerError("kernel_shap needs a predict_fn")
        rows = self.check_rows(rows)
        with self._slot.bound(predict_fn):
            explainer = self._fitted_shap()._explainer
        results: list[Explanation] = []
        pending: list[tuple[int, _Coalitions | None]] = []
        for i in range(len(rows)):
            pending.append((i, self._sample(explainer, rows[i : i + 1])))
            if sum(len(c.rows) for _, c in pending if c) + len(pending) >= self.max_rows_per_call:
                results += self._finish(explainer, rows, pending, predict_fn)
                pending = []
        if pending:
            results += self._finish(explainer, rows, pending, predict_fn)
        return results

    def _sample(self, explainer: _DeferredKernelExplainer, row: np.ndarray) -> _Coalitions | None:
        """Draw the coalitions of ``row``; ``None`` when at most one feature varies
        (shap then needs no coalition)."""
        placeholder = np.full((1, explainer.D), 1.0 / explainer.D)
        np.random.seed(self.seed)
        with self._slot.bound(lambda X: placeholder):
            try:
                explainer.explain(row, nsamples=self.nsamples, l1_reg="auto")
            except _Deferred as deferred:
                return deferred.coalitions
        return None

    def _finish(
        self,
        explainer: _DeferredKernelExplainer,
        rows: np.ndarray,
        pending: list[tuple[int, _Coalitions | None]],
        predict_fn: PredictFn,
    ) -> list[Explanation]:
        """One model call for the rows of ``pending`` and their coalitions; the results."""
        own = rows[[i for i, _ in pending]]
        batch = np.concatenate([own] + [c.rows for _, c in pending if c is not None])
        outputs = np.asarray(predict_fn(batch))
        if outputs.shape != (len(batch), explainer.D):
            raise ExplainerError(
                f"kernel_shap: model returned shape {outputs.shape} for {len(batch)} rows"
            )
        results, start = [], len(own)
        for position, (i, coalitions) in enumerate(pending):
            fx = outputs[position]
            if coalitions is None:
                np.random.seed(self.seed)
                with self._slot.bound(lambda X, fx=fx: fx[None, :]):
                    phi = explainer.explain(rows[i : i + 1], nsamples=self.nsamples)
            else:
                stop = start + len(coalitions.rows)
                phi = explainer.resume(coalitions, fx, outputs[start:stop])
                start = stop
            results.append(self._explanation(explainer, rows[i : i + 1], fx, phi))
        return results

    def _explanation(
        self, explainer: _DeferredKernelExplainer, row: np.ndarray, fx: np.ndarray,
        phi: np.ndarray,
    ) -> Explanation:
        label = int(np.argmax(fx))
        units = "probability" if self.link == "identity" else "log-odds"
        prediction = [float(v) for v in fx]
        expected = np.atleast_1d(explainer.expected_value)
        return shap_explanation(self, row, prediction, phi.T, expected, label, units)

    def _fitted_shap(self) -> _BatchedKernelShap:
        if self._shap is None:
            shap = _BatchedKernelShap(
                self._slot,
                link=self.link,
                feature_names=list(self.schema.feature_names),
                categorical_names=categorical(self.schema),
                task="classification",
                seed=self.seed,
            )
            shap.fit(
                self._reference,
                summarise_background=True,
                n_background_samples=self.background_size,
            )
            if not shap._explainer.vector_out:
                raise ExplainerError("kernel_shap needs a [batch, classes] probability output")
            self._shap = shap
        return self._shap
