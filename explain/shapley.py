"""The explanation record of a SHAP method (kernel_shap, linear_shap, tree_shap).

Every SHAP explainer ends the same way: the values of the explained output become
``shap_values`` in column order, the values of every output give the contributions
toward the adverse outcome and so the reasons (:class:`~explain.reasons.ReasonWriter`),
and a one-sentence summary names the three attributes that moved the output most.
"""

from __future__ import annotations

import numpy as np

from explain.base import Explainer, Explanation, FeatureSchema

__all__ = ["shap_explanation", "TOP_ATTRIBUTES"]

TOP_ATTRIBUTES = 3
"""Attributes named in a SHAP summary."""


def shap_explanation(
    explainer: Explainer,
    row: np.ndarray,
    prediction: list[float] | int,
    values: np.ndarray,
    expected: np.ndarray,
    label: int,
    units: str,
) -> Explanation:
    """The explanation of output ``label`` (or of the only output) of one row.

    Args:
        explainer: the explainer (its method, model, schema and reason writer).
        row: the explained row, float32 ``[1, n_features]``.
        prediction: the model's output for the row (probabilities or class index).
        values: SHAP values ``[outputs, n_features]``, in ``units``.
        expected: ``[outputs]`` average output on the background.
        label: the explained class (index of the output when there are several).
        units: ``probability`` or ``log-odds``.
    """
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    expected = np.atleast_1d(np.asarray(expected, dtype=np.float64))
    index = label if len(values) > 1 else 0
    names = explainer.schema.feature_names
    explained = values[index]
    contributions = explainer.reasons.toward_adverse(values)
    reasons, withheld, contrary = explainer.reasons.from_contributions(row, contributions)
    class_name = explainer.schema.class_name(label)
    return Explanation(
        method=explainer.method,
        model=explainer.model,
        prediction=prediction,
        explained_class=label,
        explained_class_name=class_name,
        summary=_summary(explainer.schema, row, class_name, explained, float(expected[index]),
                         units),
        feature_values=explainer.feature_values(row),
        reasons=reasons,
        withheld_reasons=withheld or None,
        contrary_reasons=contrary or None,
        shap_values={name: float(v) for name, v in zip(names, explained, strict=True)},
        expected_value=float(expected[index]),
        output_units=units,
    )


def _summary(
    schema: FeatureSchema,
    row: np.ndarray,
    class_name: str,
    values: np.ndarray,
    expected: float,
    units: str,
) -> str:
    top = np.argsort(-np.abs(values), kind="stable")[:TOP_ATTRIBUTES]
    parts = [f"{schema.condition(int(i), row[0, int(i)])} ({values[i]:+.3f})" for i in top]
    listed = ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else parts[0]
    total = expected + float(values.sum())
    return (
        f'The {units} of "{class_name}" is {total:.3f} against an average of {expected:.3f}; '
        f"the attributes that moved it most were {listed}."
    )
