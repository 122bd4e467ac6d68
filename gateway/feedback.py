"""Feedback: a client's item ``{"decision_id", "reward" | "truth"[, "correction"]}``
turned into a reward per model.

A scalar reward (in [0, 1]) credits the routed model only. A ground truth is compared
with every model output the decision recorded (routed and shadows) on the output
named by ``feedback.output``: integer, BOOL and BYTES outputs score the share of
matching elements; float outputs score 1 - mean absolute error, clipped to [0, 1].
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.config import FeedbackSpec
from gateway.decisions import MAX_RECORDED_ELEMENTS, Decision, DecisionStore, FeedbackRecorded
from gateway.feedback_tokens import TOKEN_FIELD
from gateway.metrics import GatewayMetrics
from gateway.shadows import Shadows
from protos.errors import DecisionNotFoundError, InvalidRequestError
from routers.base import Outcome, Router
from routers.state import Learning

__all__ = ["FIELDS", "FeedbackDesk", "FeedbackItem", "parse_feedback", "score_truth",
           "score_model"]


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


FIELDS = ("decision_id", "reward", "truth", "correction", TOKEN_FIELD)
"""The fields a feedback item may have; any other is refused (a typo such as
``corection`` must not turn a correction into a duplicate)."""


def parse_feedback(item: Any) -> FeedbackItem:
    """Parse and check one item.

    Raises:
        InvalidRequestError: not an object, a field not in :data:`FIELDS`, no string
            ``decision_id``, not exactly one of ``reward`` and ``truth``, a reward
            outside [0, 1], a non-boolean ``correction``.
    """
    if not isinstance(item, dict):
        raise InvalidRequestError("each feedback item must be an object")
    unknown = sorted(str(name) for name in item if name not in FIELDS)
    if unknown:
        raise InvalidRequestError(
            f"unknown feedback field {unknown[0]!r} (a feedback item has {', '.join(FIELDS)})")
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


class FeedbackDesk:
    """Feedback of one deployment: find the decision (in this process's memory or the
    store, once its shadows have answered), score it, and record it with the router
    counts it changes in one store transaction, acknowledged only once committed. A
    repeat is a ``duplicate`` that counts nothing; ``"correction": true`` replaces it.

    Args:
        name: deployment name.
        spec: the deployment's truth-to-reward rule.
        router: its router (for :meth:`~routers.base.Router.learning`).
        store: the decision store.
        shadows: the deployment's shadow calls (awaited before scoring a truth).
        metrics: gateway metrics.
        on_learned: called after each new or corrected feedback with the promotion it
            caused, or None.
    """

    def __init__(self, name: str, spec: FeedbackSpec, router: Router, store: DecisionStore,
                 shadows: Shadows, metrics: GatewayMetrics,
                 on_learned: Callable[[dict[str, Any] | None], None]) -> None:
        self.name = name
        self.spec = spec
        self.router = router
        self.store = store
        self.shadows = shadows
        self.metrics = metrics
        self.on_learned = on_learned
        self.on_feedback: Callable[[Decision, dict[str, Any], bool], None] | None = None
        """Called with the decision, the feedback document and whether it is a
        correction, after each new or corrected feedback's commit (the fairness
        monitor), or None."""

    async def apply(self, item: Any) -> dict[str, Any]:
        """Apply one feedback item ``{"decision_id", "reward" | "truth"[,
        "correction"]}``; acknowledged only once committed.

        Returns:
            ``{"decision_id", "status": "accepted" | "corrected" | "duplicate",
            "rewards"[, "not_learned"]}``.

        Raises:
            InvalidRequestError: malformed item, reward not in [0, 1], truth of the
                wrong shape.
            DecisionNotFoundError: unknown decision, or one of another deployment.
        """
        parsed = parse_feedback(item)
        decision = _takes_feedback(await self._settled_decision(parsed.decision_id))
        if parsed.truth is None:
            rewards = {decision.routed: parsed.reward}
        else:
            rewards = score_truth(decision, parsed.truth, self.spec)
        learned = {k: v for k, v in rewards.items() if k in self.router.models}
        learning = self.router.learning(Outcome(decision.routed, learned)) if learned else None
        if learning is None and parsed.correction:  # the old rewards still come off
            learning = Learning(self.name, {})
        doc = {"reward": parsed.reward, "truth": parsed.truth, "time": time.time(),
               "learned": sorted(learning.rewards) if learning else []}
        write = self.store.correct_feedback if parsed.correction else self.store.record_feedback
        recorded = await write(decision, doc, rewards, learning)
        if recorded.new and self.on_feedback is not None:
            self.on_feedback(decision, doc, parsed.correction)
        return self._feedback_result(decision, recorded, parsed.correction, learned, rewards)

    def _feedback_result(self, decision: Decision, recorded: FeedbackRecorded,
                         correction: bool, learned: dict, rewards: dict) -> dict[str, Any]:
        if not recorded.new:
            self.metrics.feedback.labels(self.name, "duplicate").inc()
            return {"decision_id": decision.id, "status": "duplicate",
                    "rewards": recorded.rewards}
        status = "corrected" if correction else "accepted"
        self.metrics.feedback.labels(self.name, status).inc()
        if not correction:
            for key, value in learned.items():
                self.metrics.rewards.labels(self.name, key).inc(value)
                self.metrics.scored.labels(self.name, key).inc()
        self.on_learned(recorded.promotion)
        result = {"decision_id": decision.id, "status": status, "rewards": recorded.rewards}
        if len(learned) < len(rewards):  # a model left the router since the decision
            result["not_learned"] = sorted(set(rewards) - set(learned))
        return result

    async def check(self, item: Any) -> None:
        """Validate one feedback item without applying it.

        Raises:
            InvalidRequestError, DecisionNotFoundError: as :meth:`apply`.
        """
        parsed = parse_feedback(item)
        decision = _takes_feedback(await self._decision(parsed.decision_id))
        if parsed.truth is not None:
            score_model(decision, decision.routed, parsed.truth, self.spec)

    async def _decision(self, decision_id: str) -> Decision:
        """The decision, from this process's memory when it made it, else the store
        (waiting up to twice the flush interval for another replica's queued write).

        Raises:
            DecisionNotFoundError: unknown, or of another deployment.
        """
        decision = self.store.cached(decision_id)
        if decision is None:
            decision = await self._stored(decision_id)
        if decision.deployment != self.name:
            raise DecisionNotFoundError(
                f"decision {decision_id!r} belongs to deployment {decision.deployment!r}"
            )
        return decision

    async def _stored(self, decision_id: str) -> Decision:
        try:
            return await self.store.get(decision_id)
        except DecisionNotFoundError:
            await asyncio.sleep(2 * self.store.spec.flush_interval_ms / 1000 + 0.05)
            return await self.store.get(decision_id)

    async def _settled_decision(self, decision_id: str) -> Decision:
        """The decision once every shadow has answered or failed, so that a truth
        scores every model that saw the request (shadows of another replica are
        awaited through the store, up to the shadows' deadline)."""
        decision = await self._decision(decision_id)
        if decision.settled():
            return decision
        await self.shadows.settled(decision_id)
        deadline = time.monotonic() + self.shadows.wait_s
        while not decision.settled() and time.monotonic() < deadline:
            if self.store.cached(decision_id) is None:
                decision = await self.store.get(decision_id)
                if decision.settled():
                    break
            await asyncio.sleep(0.05)
        return decision


def _takes_feedback(decision: Decision) -> Decision:
    """A decision that may take feedback.

    Raises:
        InvalidRequestError: the decision failed (its model answered nothing).
    """
    if decision.status == "failed":
        raise InvalidRequestError(
            f"decision {decision.id!r} failed ({decision.errors.get(decision.routed)}); "
            "a failed decision takes no feedback")
    return decision
