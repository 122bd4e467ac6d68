"""scikit-learn runtime: a joblib-pickled estimator or pipeline.

Metadata comes from the artifact where it can: ``n_features_in_`` gives the input
``input`` FP32 ``[-1, n]``; ``predict`` gives the output ``label`` ``[-1]`` (INT64 for
integer classes, FP64 for a regressor, BYTES for string classes) and
``predict_proba``, when the estimator has it, gives ``probabilities`` FP64
``[-1, n_classes]``. Declared inputs / outputs in the settings replace these; a
declared output is computed by the estimator method of the same name, or by
``predict`` / ``predict_proba`` for ``label`` / ``probabilities``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from protos.errors import InferenceError
from protos.protocol import ModelMetadata, TensorMetadata, datatype_of
from wrappers.base import ModelWrapper, framework_error
from wrappers.settings import ModelSettings, merge_metadata

__all__ = ["SKLearnWrapper"]

_METHOD_BY_OUTPUT = {"label": "predict", "probabilities": "predict_proba"}

ARGMAX_CLASSIFIERS = frozenset({
    "LogisticRegression", "LogisticRegressionCV", "RandomForestClassifier",
    "ExtraTreesClassifier", "DecisionTreeClassifier", "ExtraTreeClassifier",
    "GradientBoostingClassifier", "HistGradientBoostingClassifier", "MLPClassifier",
    "GaussianNB", "MultinomialNB", "BernoulliNB", "ComplementNB", "CategoricalNB",
    "KNeighborsClassifier", "LinearDiscriminantAnalysis", "QuadraticDiscriminantAnalysis",
})
"""Estimators whose ``predict`` is, by construction, the class of highest
``predict_proba``: when both outputs are served, one ``predict_proba`` pass gives both
(halving the cost of a pipeline whose preprocessing dominates)."""


class SKLearnWrapper(ModelWrapper):
    """Serve a scikit-learn estimator saved with ``joblib.dump``.

    Args:
        model_path: the ``.joblib`` (or pickle) file.
        settings: optional settings; declared inputs / outputs override the artifact's.
    """

    platform = "sklearn"

    def __init__(self, model_path: str | Path, settings: ModelSettings | None = None) -> None:
        self.model_path = Path(model_path)
        self.settings = settings
        self._model: Any = None
        self._metadata: ModelMetadata | None = None
        self._input_name = "input"
        self._methods: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = []
        self._shared_label: np.ndarray | None = None

    def load(self) -> None:
        """Unpickle the estimator and derive metadata.

        Raises:
            InferenceError: the file is missing, not a joblib pickle, has no
                ``predict``, or a declared output has no matching method.
        """
        try:
            model = joblib.load(self.model_path)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure
            raise InferenceError(f"cannot load sklearn model {self.model_path}: {exc}") from exc
        if not hasattr(model, "predict"):
            raise InferenceError(
                f"{self.model_path} holds {type(model).__name__}, not an estimator")
        self._model = model
        self._metadata = merge_metadata(self._artifact_metadata(model), self.settings)
        if len(self._metadata.inputs) != 1:
            raise InferenceError("sklearn models take exactly one input tensor")
        self._input_name = self._metadata.inputs[0].name
        self._methods = [(o.name, self._method_for(o.name)) for o in self._metadata.outputs]
        self._shared_label = self._label_from_probabilities(model)

    def _label_from_probabilities(self, model: Any) -> np.ndarray | None:
        """The classes to index with argmax(probabilities), when ``label`` may be derived
        from ``probabilities`` (both served by their default methods, and the final
        estimator is in :data:`ARGMAX_CLASSIFIERS`); else ``None``."""
        names = [name for name, _ in self._methods]
        if "label" not in names or "probabilities" not in names:
            return None
        final = getattr(model, "_final_estimator", model)
        classes = getattr(model, "classes_", None)
        if type(final).__name__ not in ARGMAX_CLASSIFIERS or classes is None:
            return None
        return np.asarray(classes)

    def _method_for(self, output: str) -> Callable[[np.ndarray], np.ndarray]:
        method = getattr(self._model, _METHOD_BY_OUTPUT.get(output, output), None)
        if not callable(method):
            raise InferenceError(
                f"sklearn model {self.model_path.name} has no method for output {output!r}"
            )
        return method

    def _artifact_metadata(self, model: Any) -> ModelMetadata:
        n = getattr(model, "n_features_in_", None)
        inputs = [TensorMetadata("input", "FP32", [-1, int(n) if n is not None else -1])]
        classes = getattr(model, "classes_", None)
        if classes is None:
            outputs = [TensorMetadata("label", "FP64", [-1])]
        else:
            label_type = "INT64" if np.asarray(classes).dtype.kind in "iub" else "BYTES"
            if np.asarray(classes).dtype.kind == "f":
                label_type = datatype_of(np.asarray(classes).dtype)
            outputs = [TensorMetadata("label", label_type, [-1])]
        if hasattr(model, "predict_proba"):
            width = len(classes) if classes is not None else -1
            outputs.append(TensorMetadata("probabilities", "FP64", [-1, width]))
        name = self.settings.name if self.settings else self.model_path.stem
        return ModelMetadata(name, self.platform, inputs, outputs)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run every declared output's method on the one input.

        Args:
            inputs: ``{input_name: array [n, n_features]}``.

        Returns:
            ``{output_name: array [n, ...]}`` as the estimator returns it (the target
            casts to the declared datatypes).

        Raises:
            InferenceError: the model is not loaded or the estimator raised.
        """
        if self._model is None:
            raise InferenceError(f"sklearn model {self.model_path.name} is not loaded")
        x = inputs[self._input_name]
        try:
            if self._shared_label is not None:
                probabilities = np.asarray(self._model.predict_proba(x))
                label = self._shared_label.take(probabilities.argmax(axis=1))
                return {"label": label, "probabilities": probabilities}
            return {name: np.asarray(method(x)) for name, method in self._methods}
        except Exception as exc:  # noqa: BLE001 - framework errors become InferenceError
            raise framework_error("sklearn model", exc) from exc

    def unload(self) -> None:
        """Drop the estimator."""
        self._model = None
        self._methods = []

    def metadata(self) -> ModelMetadata:
        """Artifact metadata with settings applied (settings only before ``load``)."""
        if self._metadata is None:
            return merge_metadata(ModelMetadata(self.model_path.stem, self.platform, [], []),
                                  self.settings)
        return self._metadata
