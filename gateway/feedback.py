"""Feedback: a client's item ``{"decision_id", "reward" | "truth"[, "correction"]}``
turned into a reward per model.

A scalar reward (in [0, 1]) credits the routed model only. A ground truth is compared
with every model output the decision recorded (routed and shadows) on the output
named by ``feedback.output``: integer, BOOL and BYTES outputs score the share of
matching elements; float outputs score 1 - mean absolute error, clipped to [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.config import FeedbackSpec
from gateway.decisions import MAX_RECORDED_ELEMENTS, Decision
from protos.errors import InvalidRequestError

__all__ = ["FeedbackItem", "parse_feedback", "score_truth", "score_model"]


@dataclass(frozen=True, slots=True)
class FeedbackItem:
    """One parsed feedback item.

    Attributes:
        decision_id: the decision it is about.
        reward: a reward in [0, 1], or None when a truth was sent.
        truth: the ground truth (a value or nested list), or None.
        correction: replace the feedback in force instead of being a duplicate.
    """

    decision_id: str
    reward: float | None
    truth: Any
    correction: bool = False


def parse_feedback(item: Any) -> FeedbackItem:
    """Parse and check one item.

    Raises:
        InvalidRequestError: not an object, no string ``decision_id``, not exactly one
            of ``reward`` and ``truth``, a reward outside [0, 1], a non-boolean
            ``correction``.
    """
    if not isinstance(item, dict):
        raise InvalidRequestError("each feedback item must be an object")
    decision_id = item.get("decision_id")
    if not isinstance(decision_id, str) or not decision_id:
        raise InvalidRequestError("feedback needs a string 'decision_id'")
    correction = item.get("correction", False)
    if not isinstance(correction, bool):
        raise InvalidRequestError("'correction' must be true or false")
    has_reward, has_truth = "reward" in item, "truth" in item
    if has_reward == has_truth:
        raise InvalidRequestError("feedback needs exactly one of 'reward' or 'truth'")
    if has_truth:
        return FeedbackItem(decision_id, None, item["truth"], correction)
    reward = item["reward"]
    if (
        isinstance(reward, bool) or not isinstance(reward, int | float)
        or not math.isfinite(reward) or not 0 <= reward <= 1
    ):
        raise InvalidRequestError(f"'reward' must be a number in [0, 1], got {reward!r}")
    return FeedbackItem(decision_id, float(reward), None, correction)


def score_truth(decision: Decision, truth: Any, spec: FeedbackSpec) -> dict[str, float]:
    """Reward of every model whose output the decision recorded, routed model first.

    Raises:
        InvalidRequestError: the routed model's output is missing or too large to have
            been recorded, or the truth does not fit it (size, kind, labels).
    """
    rewards = {decision.routed: score_model(decision, decision.routed, truth, spec)}
    for key, outputs in decision.outputs.items():
        recorded = outputs.get(spec.output)
        if key != decision.routed and recorded is not None and "data" in recorded:
            rewards[key] = _reward(recorded, truth, spec)
    return rewards


def score_model(decision: Decision, key: str, truth: Any, spec: FeedbackSpec) -> float:
    """The reward of model ``key`` for ``truth``.

    Raises:
        InvalidRequestError: as :func:`score_truth`.
    """
    recorded = decision.outputs.get(key, {}).get(spec.output)
    if recorded is None:
        raise InvalidRequestError(
            f"decision {decision.id!r} has no output {spec.output!r} to compare the truth with"
        )
    if "data" not in recorded:
        raise InvalidRequestError(
            f"decision {decision.id!r}: output {spec.output!r} was too large to record "
            f"(over {MAX_RECORDED_ELEMENTS:,} elements); send a reward instead"
        )
    return _reward(recorded, truth, spec)


def _reward(recorded: dict[str, Any], truth: Any, spec: FeedbackSpec) -> float:
    predicted = np.asarray(recorded["data"], dtype=object)
    try:
        expected = np.asarray(truth, dtype=object).ravel()
    except ValueError:
        raise InvalidRequestError("'truth' must be a value or a (nested) list") from None
    if expected.size != predicted.size:
        raise InvalidRequestError(
            f"'truth' has {expected.size} values; output {spec.output!r} of the decision has "
            f"{predicted.size} (shape {recorded['shape']})"
        )
    values = expected.tolist()
    _check_truth(values, recorded["datatype"], spec.output)
    if spec.labels is not None:
        unknown = [v for v in values if v not in spec.labels]
        if unknown:
            raise InvalidRequestError(
                f"'truth' value {unknown[0]!r} is not one of the labels {spec.labels} of "
                f"output {spec.output!r}"
            )
    if recorded["datatype"].startswith("FP"):
        error = np.abs(predicted.astype(float) - np.asarray(values, dtype=float)).mean()
        return float(min(1.0, max(0.0, 1.0 - error)))
    matches = [p == e for p, e in zip(predicted.tolist(), values, strict=True)]
    return float(sum(matches) / len(matches))


def _check_truth(values: list, datatype: str, output: str) -> None:
    """Truth values must be of the output's kind: integers (or true/false) for integer
    and BOOL outputs, finite numbers for float outputs, strings for BYTES outputs.

    Raises:
        InvalidRequestError: naming the first bad value.
    """
    for value in values:
        if datatype == "BYTES":
            ok = isinstance(value, str)
        elif datatype.startswith("FP"):
            ok = isinstance(value, int | float) and not isinstance(value, bool) \
                and math.isfinite(value)
        elif datatype == "BOOL":
            ok = isinstance(value, bool) or value in (0, 1)
        else:
            ok = (isinstance(value, int) and not isinstance(value, bool)) or (
                isinstance(value, float) and value.is_integer()
            )
        if not ok:
            raise InvalidRequestError(
                f"'truth' value {value!r} does not fit output {output!r} ({datatype})"
            )
