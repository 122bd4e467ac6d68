"""Which decisions of a deployment are explained: ``explain.when`` and ``explain.adverse``.

==========  ===========================================================================
when        decisions explained
==========  ===========================================================================
refusals    adverse ones only (the default)
all         every one: adverse ones always, the others while the queue has room
sample      adverse ones always, a ``sample_rate`` share of the others while the queue
            has room
==========  ===========================================================================

The adverse outcome is declared per deployment, ``adverse: {output: label, values: [0]}``:
a decision is adverse when the routed model's ``output`` is one of ``values`` for any of
its rows (for a ``[rows, classes]`` output, the index of each row's largest value). A
decision whose output was not recorded (the client asked for other outputs) counts as
adverse: an adverse decision must never go unexplained. A deployment that declares no
adverse outcome treats every decision as adverse.

Adverse decisions are explained durably (their job is in the decision store until done,
see ``gateway.decisions.explanation_jobs``); the others are best effort, and every one of
them not explained for lack of room or by sampling is counted
(``arbiter_explanations_shed_total``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Literal

from explain.settings import ExplainSpec

__all__ = ["ExplanationPolicy", "Verdict", "adverse_rows"]

Verdict = Literal["adverse", "best_effort", "not_sampled", "not_explained"]
"""What a decision gets: a durable explanation, a best-effort one, none by sampling
(counted as shed), or none by policy (``when: refusals`` and not adverse)."""


class ExplanationPolicy:
    """A deployment's ``when`` and ``adverse`` rule.

    Args:
        spec: the deployment's explain block (``when`` and ``adverse`` read when present;
            defaults ``refusals`` and none).
        rng: source of the sampling draws (``when: sample``).
    """

    def __init__(self, spec: ExplainSpec, rng: random.Random | None = None) -> None:
        self.when: str = str(getattr(spec, "when", "refusals") or "refusals")
        self.sample_rate = float(spec.sample_rate)
        self.output, self.values = _adverse_rule(getattr(spec, "adverse", None))
        self._rng = rng or random.Random(spec.seed)

    @property
    def declared(self) -> bool:
        """Whether the deployment declares its adverse outcome."""
        return self.output is not None

    def adverse(self, outputs: dict[str, Any]) -> bool:
        """Whether a decision with the routed model's ``outputs`` (output name -> tensor
        document ``{"datatype", "shape", "data"}``) is adverse."""
        if self.output is None:
            return True
        flags = adverse_rows(outputs.get(self.output), self.values)
        return flags is None or any(flags)

    def verdict(self, outputs: dict[str, Any]) -> Verdict:
        """What the decision with these outputs gets (draws from the rng for
        ``when: sample``)."""
        if self.adverse(outputs):
            return "adverse"
        if self.when == "all":
            return "best_effort"
        if self.when == "sample":
            return "best_effort" if self._rng.random() < self.sample_rate else "not_sampled"
        return "not_explained"


def adverse_rows(doc: dict[str, Any] | None, values: Sequence[Any]) -> list[bool] | None:
    """Per row, whether the output value (or, for ``[rows, classes]``, the class index
    of the row's largest value) is one of ``values``; None when there is no data."""
    if not doc or "data" not in doc:
        return None
    data, shape = doc["data"], list(doc.get("shape") or [len(doc["data"])])
    if len(shape) == 2 and shape[1] > 1:
        k = int(shape[1])
        data = [max(range(k), key=lambda j, i=i: data[i * k + j]) for i in range(len(data) // k)]
    return [value in values for value in data]


def _adverse_rule(adverse: Any) -> tuple[str | None, list[Any]]:
    """(output, values) of an ``adverse`` block: a model with attributes or a mapping."""
    if adverse is None:
        return None, []
    if isinstance(adverse, dict):
        return adverse.get("output"), list(adverse.get("values") or [])
    return getattr(adverse, "output", None), list(getattr(adverse, "values", None) or [])
