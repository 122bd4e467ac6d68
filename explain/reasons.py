"""Reason codes in words: what pushed a decision toward its adverse outcome.

A :class:`ReasonWriter` turns an explanation into at most ``top_k`` :class:`Reason`
records (adverse-action notices name up to four), each with a stable reason code and one
plain sentence built from the encoding's own wording (:class:`~explain.base.FeatureSchema`:
descriptions, units, category descriptions), never from code that knows the data set:

* a categorical feature says the applicant's category: "Checking account balance below
  0 DM";
* a numeric feature says the applicant's value and compares it with the MEDIAN of that
  feature among the reference rows with a favourable outcome (or among all reference rows
  when their outcomes are not given): "Loan duration of 36 months, above the median of 18
  months among repaid loans";
* an anchor condition says the range or category the rule requires: "Loan duration of
  more than 24 months".

SHAP methods: the reasons are the features with a positive contribution toward the
adverse outcome, largest first. The contribution toward the adverse outcome is the sum of
the SHAP values of the adverse classes; for a single-output binary model (the positive
class's log-odds) it is that value when class 1 is adverse and its negation when class 0
is. Anchors: the reasons are the anchor's conditions when the decision is adverse (none
otherwise), ordered by the rise in precision each brought.

Features marked ``protected`` in the encoding are never given as reasons; those that
would have been among the first ``top_k`` are returned apart as withheld reasons.

A feature whose value counts in the applicant's favour is never given as a reason either,
even when the model's contribution pushed toward the adverse outcome: a lender cannot
write "refused because all credits were repaid on time". The encoding says which values
count in favour (:class:`~explain.base.FeatureSchema`): a category listed in
``favourable``, or a numeric value on the favourable side of the median (at the median,
or below it when ``adverse_direction`` is ``higher``, above it when ``lower``; numeric
features without a direction, or without a median, are never favourable). Such features
that would have been among the first ``top_k`` reasons are returned apart as contrary
reasons, for review, and the next features that do count against the applicant take
their places among the reasons.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from explain.base import FeatureSchema, Reason

__all__ = ["ReasonWriter", "Reasons", "format_number"]

_ALL_REFERENCE = "applicants in the reference data"

Reasons = tuple[list[Reason], list[Reason], list[Reason]]
"""``(reasons, withheld, contrary)``: the reasons given, the protected features withheld
and the favourable values set aside (see the module docstring)."""


def format_number(value: float) -> str:
    """``36``, ``5,951`` or ``1.25``: an integer without decimals, else two at most."""
    value = float(value)
    if abs(value - round(value)) < 1e-9:
        return f"{int(round(value)):,}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


class ReasonWriter:
    """Writes the reasons of explanations of one schema.

    Args:
        schema: the encoding and its wording.
        adverse: indices of the adverse classes (label values).
        top_k: most reasons per explanation.
        typical: numeric column index -> the value numeric reasons compare with (the
            median of the favourable reference rows; see :meth:`fit`).
        population: plural noun phrase for the rows ``typical`` comes from.
    """

    def __init__(
        self,
        schema: FeatureSchema,
        *,
        adverse: Sequence[int] = (0,),
        top_k: int = 4,
        typical: dict[int, float] | None = None,
        population: str = _ALL_REFERENCE,
    ) -> None:
        self.schema = schema
        self.adverse = tuple(sorted({int(a) for a in adverse}))
        self.top_k = top_k
        self.typical = dict(typical or {})
        self.population = population

    @classmethod
    def fit(
        cls,
        schema: FeatureSchema,
        reference: np.ndarray,
        outcomes: np.ndarray | None = None,
        *,
        adverse: Sequence[int] = (0,),
        top_k: int = 4,
    ) -> ReasonWriter:
        """A writer comparing numeric values with the reference's favourable rows.

        Args:
            schema: the encoding and its wording.
            reference: float ``[rows, n_features]`` encoded reference rows.
            outcomes: ``[rows]`` outcome (label = class index) of each reference row, or
                ``None`` to compare with every reference row.
            adverse: adverse class indices; rows with other outcomes are favourable.
            top_k: most reasons per explanation.

        Raises:
            ValueError: ``outcomes`` does not have one value per reference row, or no
                reference row has a favourable outcome.
        """
        rows, population = np.asarray(reference, dtype=np.float64), _ALL_REFERENCE
        if outcomes is not None:
            outcomes = np.asarray(outcomes).reshape(-1)
            if len(outcomes) != len(rows):
                raise ValueError(
                    f"{len(outcomes)} reference outcomes for {len(rows)} reference rows"
                )
            favourable = ~np.isin(outcomes, list(adverse))
            if not favourable.any():
                raise ValueError("no reference row has a favourable outcome")
            rows = rows[favourable]
            population = _population(schema, sorted({int(c) for c in outcomes[favourable]}))
        numeric = [j for j in range(rows.shape[1]) if j not in schema.category_map]
        typical = {j: float(np.median(rows[:, j])) for j in numeric} if len(rows) else {}
        return cls(schema, adverse=adverse, top_k=top_k, typical=typical, population=population)

    def toward_adverse(self, values: np.ndarray) -> np.ndarray:
        """Each feature's contribution toward the adverse outcome.

        Args:
            values: SHAP values ``[outputs, n_features]`` (one row per model output).

        Returns:
            float64 ``[n_features]`` (see the module docstring). Adverse classes the
            model has no output for add nothing; adverse classes covering every class of
            a binary model cancel out (no feature pushes toward an outcome that is
            always adverse).
        """
        values = np.atleast_2d(np.asarray(values, dtype=np.float64))
        if len(values) == 1:
            sign = (1.0 if 1 in self.adverse else 0.0) - (1.0 if 0 in self.adverse else 0.0)
            return sign * values[0]
        return values[[a for a in self.adverse if a < len(values)]].sum(axis=0)

    def from_contributions(
        self, row: np.ndarray, contributions: np.ndarray
    ) -> Reasons:
        """Reasons of a SHAP explanation.

        Args:
            row: the explained row, ``[1, n_features]``.
            contributions: ``[n_features]`` contributions toward the adverse outcome.

        Returns:
            ``(reasons, withheld, contrary)``: see the module docstring.
        """
        order = np.argsort(-np.asarray(contributions), kind="stable")
        pushing = [
            (int(j), float(contributions[j]), self.sentence(int(j), row[0, j]))
            for j in order
            if contributions[j] > 0
        ]
        return self._pick(row, pushing)

    def from_anchor(
        self, row: np.ndarray, features: Sequence[int], conditions: Sequence[str],
        gains: Sequence[float],
    ) -> Reasons:
        """Reasons of an anchor that explains an adverse decision.

        Args:
            row: the explained row, ``[1, n_features]``.
            features: column index of each condition.
            conditions: each condition as rendered by the anchor explainer
                (``name = "category"``, ``name > 24.00``, ``12.00 < name <= 24.00``).
            gains: rise in precision each condition brought.

        Returns:
            ``(reasons, withheld, contrary)``, each ordered by gain, largest first.
        """
        items = [
            (int(f), float(g), self._condition_sentence(row, int(f), text))
            for f, text, g in zip(features, conditions, gains, strict=True)
        ]
        items.sort(key=lambda item: -item[1])
        return self._pick(row, items)

    def sentence(self, column: int, code: float) -> str:
        """The sentence for ``column`` holding ``code`` (see the module docstring)."""
        value = self.schema.value(column, code)
        if isinstance(value, str):
            return self._category_sentence(column, value)
        subject = self._phrase(column, format_number(value))
        typical = self.typical.get(column)
        if typical is None:
            return subject
        if np.isclose(value, typical):
            return f"{subject}, equal to the median among {self.population}"
        side = "above" if value > typical else "below"
        shown = self._with_unit(column, format_number(typical))
        return f"{subject}, {side} the median of {shown} among {self.population}"

    def _category_sentence(self, column: int, category: str) -> str:
        phrase = self.schema.category_descriptions.get(column, {}).get(category)
        return phrase or f"{self.schema.description(column)}: {category}"

    def _with_unit(self, column: int, text: str) -> str:
        unit = self.schema.units.get(column)
        return f"{text} {unit}" if unit else text

    def _phrase(self, column: int, value_text: str) -> str:
        """The description with the value (and unit) in its ``{value}`` place or after
        "of": "Loan duration of 36 months", "2 existing credits at this bank"."""
        description = self.schema.description(column)
        shown = self._with_unit(column, value_text)
        if "{value}" in description:
            return description.replace("{value}", shown)
        return f"{description} of {shown}"

    def _condition_sentence(self, row: np.ndarray, column: int, text: str) -> str:
        if column in self.schema.category_map:
            return self.sentence(column, row[0, column])
        bounds = _numeric_bounds(self.schema.feature_names[column], text)
        if bounds is None:
            return text
        low, high = bounds
        parts = []
        if low is not None:
            parts.append(f"more than {format_number(low)}")
        if high is not None:
            parts.append(f"at most {format_number(high)}")
        return self._phrase(column, " and ".join(parts))

    def _pick(
        self, row: np.ndarray, candidates: Iterable[tuple[int, float, str]]
    ) -> Reasons:
        candidates = list(candidates)
        protected = set(self.schema.protected)
        open_ = [c for c in candidates if c[0] not in protected]
        named = [c for c in open_ if not self.favourable(c[0], row[0, c[0]])][: self.top_k]
        withheld = [c for c in candidates[: self.top_k] if c[0] in protected]
        contrary = [c for c in open_[: self.top_k] if self.favourable(c[0], row[0, c[0]])]
        return (
            [self._reason(row, *c) for c in named],
            [self._reason(row, *c) for c in withheld],
            [self._reason(row, *c) for c in contrary],
        )

    def favourable(self, column: int, code: float) -> bool:
        """Whether ``column`` holding ``code`` counts in the applicant's favour (see the
        module docstring)."""
        value = self.schema.value(column, code)
        if isinstance(value, str):
            return value in self.schema.favourable.get(column, ())
        direction = self.schema.adverse_direction.get(column)
        typical = self.typical.get(column)
        if direction is None or typical is None:
            return False
        if np.isclose(value, typical):
            return True
        return value < typical if direction == "higher" else value > typical

    def _reason(self, row: np.ndarray, column: int, contribution: float, sentence: str) -> Reason:
        return Reason(
            feature=self.schema.feature_names[column],
            code=self.schema.reason_code(column),
            sentence=sentence,
            contribution=contribution,
            value=self.schema.value(column, row[0, column]),
        )


def _population(schema: FeatureSchema, classes: list[int]) -> str:
    """Plural noun phrase for reference rows of ``classes`` ("repaid loans")."""
    phrases = [schema.class_descriptions.get(c) for c in classes]
    if classes and all(phrases):
        return " and ".join(p for p in phrases if p)
    names = " or ".join(f'"{schema.class_name(c)}"' for c in classes)
    return f"reference applicants with outcome {names}"


def _numeric_bounds(name: str, text: str) -> tuple[float | None, float | None] | None:
    """``(low, high)`` of an Alibi range condition on ``name`` (``name <= 12.00``,
    ``name > 24.00``, ``12.00 < name <= 24.00``); ``None`` if ``text`` is none of these."""
    try:
        if text.startswith(f"{name} <= "):
            return None, float(text[len(name) + 4 :])
        if text.startswith(f"{name} > "):
            return float(text[len(name) + 3 :]), None
        low, sep, high = text.partition(f" < {name} <= ")
        if sep:
            return float(low), float(high)
    except ValueError:
        return None
    return None
