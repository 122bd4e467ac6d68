"""Which explainer explains a model: one line per method.

:func:`explainer_for` builds the (unfitted) explainer ``spec`` asks for a model key;
:func:`reason_writer` builds the reason writer every explainer of a deployment shares.
Modules are imported when their method is first used: Alibi is slow to import and only
worker processes need it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from explain.base import Explainer, ExplainerError, FeatureSchema
from explain.reasons import ReasonWriter
from explain.settings import LOCAL_METHODS, ExplainSpec

__all__ = ["explainer_for", "reason_writer", "METHOD_SETTINGS"]

METHOD_SETTINGS: dict[str, tuple[str, ...]] = {
    "anchor_tabular": (
        "anchor_threshold", "anchor_batch_size", "anchor_coverage_samples", "output",
    ),
    "kernel_shap": ("kernel_shap_nsamples", "kernel_shap_link", "background_size", "output"),
    "linear_shap": (),
    "tree_shap": (),
}
"""Method -> the ExplainSpec fields that shape its results (besides seed, adverse and
reasons_top_k, which shape every method's)."""


def _anchor(spec: ExplainSpec, model: str, schema: FeatureSchema, reasons: ReasonWriter
            ) -> Explainer:
    from explain.alibi import AnchorTabularExplainer

    return AnchorTabularExplainer(
        model, schema, seed=spec.seed, threshold=spec.anchor_threshold,
        batch_size=spec.anchor_batch_size, coverage_samples=spec.anchor_coverage_samples,
        label_output=spec.output == "label", reasons=reasons,
    )


def _kernel(spec: ExplainSpec, model: str, schema: FeatureSchema, reasons: ReasonWriter
            ) -> Explainer:
    from explain.kernel import KernelShapExplainer

    return KernelShapExplainer(
        model, schema, seed=spec.seed, nsamples=spec.kernel_shap_nsamples,
        link=spec.kernel_shap_link, background_size=spec.background_size, reasons=reasons,
    )


def _linear(spec: ExplainSpec, model: str, schema: FeatureSchema, reasons: ReasonWriter
            ) -> Explainer:
    from explain.linear import LinearShapExplainer

    return LinearShapExplainer(model, schema, artifact=spec.model_artifact[model],
                               reasons=reasons)


def _tree(spec: ExplainSpec, model: str, schema: FeatureSchema, reasons: ReasonWriter
          ) -> Explainer:
    from explain.alibi import TreeShapExplainer

    return TreeShapExplainer(model, schema, artifact=spec.model_artifact[model], seed=spec.seed,
                             reasons=reasons)


_BUILDERS: dict[str, Callable[[ExplainSpec, str, FeatureSchema, ReasonWriter], Explainer]] = {
    "anchor_tabular": _anchor,
    "kernel_shap": _kernel,
    "linear_shap": _linear,
    "tree_shap": _tree,
}


def explainer_for(
    spec: ExplainSpec, model: str, schema: FeatureSchema, reasons: ReasonWriter | None = None
) -> Explainer:
    """The (unfitted) explainer ``spec`` asks for, for model key ``model``.

    Args:
        spec: the deployment's settings (``spec.method_for(model)`` picks the method).
        model: the model key.
        schema: the encoding and its wording.
        reasons: the reason writer (default: one of ``schema`` with ``spec.adverse`` and
            ``spec.reasons_top_k`` and no reference statistics).

    Raises:
        ExplainerError: a local method (tree_shap, linear_shap) and no ``model_artifact``
            for ``model``.
    """
    method = spec.method_for(model)
    if method in LOCAL_METHODS and model not in spec.model_artifact:
        raise ExplainerError(f"{method}: no model_artifact for model {model!r}")
    if reasons is None:
        reasons = ReasonWriter(schema, adverse=spec.adverse.values, top_k=spec.reasons_top_k)
    return _BUILDERS[method](spec, model, schema, reasons)


def reason_writer(
    spec: ExplainSpec, schema: FeatureSchema, reference: np.ndarray,
    outcomes: np.ndarray | None,
) -> ReasonWriter:
    """The reason writer of a deployment (see :meth:`ReasonWriter.fit`); with no reference
    rows, one without numeric comparisons.

    Raises:
        ValueError: ``outcomes`` does not fit ``reference``.
    """
    if len(reference) == 0:
        return ReasonWriter(schema, adverse=spec.adverse.values, top_k=spec.reasons_top_k)
    return ReasonWriter.fit(schema, reference, outcomes, adverse=spec.adverse.values,
                            top_k=spec.reasons_top_k)
