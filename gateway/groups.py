"""Protected groups of a deployment's decisions: the ``monitoring:`` block of a
deployment's config, and the attributes it defines, which tell each row's group.

Example (``examples/credit/gateway.yaml`` has the full one)::

    monitoring:
      encoding: models/encoding.json          # feature names and category names
      approval: {output: label, value: 1}     # label 1 (good risk) is an approval
      groups:
        - {name: sex, feature: personal_status_and_sex,
           categories: {female: ["female : divorced/separated/married"],
                        male: [1, 2, 3]}}     # category names or codes
        - {name: age, feature: age_in_years, bands: [0, 25, 40, 60, 200]}
        - {name: channel, parameter: channel, categories: {web: [web], branch: [branch]}}
      reference: {sex: male, age: 40-60}      # default: each attribute's first group
      windows: [hour, day, day_of_week]
      alerts: [{metric: disparate_impact, below: 0.8, confidence: 0.95}]
      guardrail: {metric: disparate_impact, tolerance: 0.05}

An attribute reads one column of the first input (by ``column`` index, or by
``feature`` name through the encoding file), or one request parameter (for what the
model is not given). Its groups are named in the config only: category codes (or the
encoding's category names) or numeric bands ``[low, high)``; any other value is in the
group ``other``. So every metric label is bounded by the config.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "OTHER",
    "WINDOWS",
    "AlertSpec",
    "ApprovalSpec",
    "GroupAttribute",
    "GroupSpec",
    "GuardrailSpec",
    "MonitoringSpec",
    "attributes_of",
    "resolved",
]

OTHER = "other"
"""The group of a value that no configured group holds."""

WINDOWS = ("all", "hour", "day", "day_of_week")
"""Time windows: ``all`` (every decision within ``horizon_days``) and the configurable
ones: the current hour, the current day, and today's weekday over the horizon."""

Label = Annotated[str, Field(min_length=1, max_length=64,
                             pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:+\-<>=]*$")]
Value = int | float | str
Window = Literal["hour", "day", "day_of_week"]
Metric = Literal["approval_rate", "accuracy", "tpr", "fpr", "disparate_impact",
                 "equal_opportunity_difference", "average_odds_difference"]
Comparison = Literal["disparate_impact", "equal_opportunity_difference",
                     "average_odds_difference"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GroupSpec(_Spec):
    """One protected attribute and its groups."""

    name: Label = Field(description="Attribute name, the metric label 'attribute'.")
    feature: str | None = Field(
        default=None, description="Feature name of the first input's column (looked up "
        "in the encoding file's feature_names).")
    column: int | None = Field(default=None, ge=0, description="Column index of the "
                               "first input (rows are the first dimension).")
    parameter: str | None = Field(
        default=None, description="Request parameter holding the attribute (for one the "
        "model is not given); the same group for every row of the request.")
    input: str | None = Field(default=None, description="Input read by feature/column; "
                              "None: the first input.")
    categories: dict[Label, list[Value]] | None = Field(
        default=None, description="Group label -> values in it: category codes, the "
        "encoding's category names (with feature), or parameter values.")
    bands: list[float] | None = Field(
        default=None, min_length=2, description="Increasing edges of numeric bands "
        "[low, high), e.g. [0, 25, 40, 60, 200]; groups are named 'low-high' unless "
        "labels are given.")
    labels: list[Label] | None = Field(default=None, description="Names of the bands, "
                                       "one per band.")

    @model_validator(mode="after")
    def _check(self) -> GroupSpec:
        sources = [s for s in ("feature", "column", "parameter") if getattr(self, s) is not None]
        if len(sources) != 1:
            raise ValueError(f"group {self.name!r}: give exactly one of feature, column, "
                             f"parameter (got {sources or 'none'})")
        if (self.categories is None) == (self.bands is None):
            raise ValueError(f"group {self.name!r}: give exactly one of categories, bands")
        if self.bands is not None:
            if any(b >= a for b, a in zip(self.bands, self.bands[1:], strict=False)) or \
                    not all(math.isfinite(b) for b in self.bands):
                raise ValueError(f"group {self.name!r}: bands must be finite and increasing")
            if self.labels is not None and len(self.labels) != len(self.bands) - 1:
                raise ValueError(f"group {self.name!r}: {len(self.bands) - 1} bands need as "
                                 f"many labels, got {len(self.labels)}")
        elif self.labels is not None:
            raise ValueError(f"group {self.name!r}: labels name bands; categories are "
                             "named by their keys")
        if OTHER in self.group_labels():
            raise ValueError(f"group {self.name!r}: {OTHER!r} is reserved for values in no "
                             "group")
        return self

    def group_labels(self) -> list[str]:
        """The configured group labels, in config order."""
        if self.categories is not None:
            return list(self.categories)
        assert self.bands is not None
        if self.labels is not None:
            return list(self.labels)
        return [f"{lo:g}-{hi:g}" for lo, hi in zip(self.bands, self.bands[1:], strict=False)]


class ApprovalSpec(_Spec):
    """Which output value is an approval (and which truth deserves one)."""

    output: str = Field(default="label", description="Output holding the decision.")
    value: int | str = Field(default=1, description="The output value that approves; a "
                             "truth equal to it deserved approval (a positive).")


class AlertSpec(_Spec):
    """An alert on one figure: it fires only when the whole confidence interval is past
    the threshold, so that small groups raise no false alarms."""

    metric: Metric = Field(description="Per-group rate or comparison with the reference.")
    below: float | None = Field(default=None, description="Fires when the interval's "
                                "upper bound is below this.")
    above: float | None = Field(default=None, description="Fires when the interval's "
                                "lower bound is above this.")
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="Of the interval.")
    windows: list[Literal["all", "hour", "day", "day_of_week"]] | None = Field(
        default=None, description="Windows checked; None: all and the monitored ones.")

    @model_validator(mode="after")
    def _check(self) -> AlertSpec:
        if (self.below is None) == (self.above is None):
            raise ValueError("an alert needs exactly one of below, above")
        return self


class GuardrailSpec(_Spec):
    """Champion-challenger: no promotion of a challenger less fair than the champion."""

    metric: Comparison = Field(default="disparate_impact", description="The comparison "
                               "with the reference group that is held.")
    tolerance: float = Field(default=0.05, ge=0, le=1, description="How much worse than "
                             "the champion's a challenger's worst group may be: a ratio "
                             "that far lower (of min(r, 1/r)), a difference that far "
                             "larger in absolute value.")
    min_decisions: int = Field(default=30, ge=1, description="Rows a group (and its "
                               "reference) needs in the figure's denominator to count.")
    attributes: list[str] | None = Field(default=None, description="Attributes held; "
                                         "None: every one.")


class MonitoringSpec(_Spec):
    """Fairness and outcome monitoring of one deployment (``gateway.monitoring``)."""

    groups: list[GroupSpec] = Field(min_length=1, description="Protected attributes.")
    encoding: Path | None = Field(default=None, description="encoding.json (feature_names, "
                                  "categorical) for feature names and category names; "
                                  "relative to the config file.")
    approval: ApprovalSpec = Field(default_factory=ApprovalSpec,
                                   description="What an approval is.")
    reference: dict[str, Label] = Field(default_factory=dict, description="Attribute -> "
                                        "reference group; default: its first group.")
    windows: list[Window] = Field(default_factory=lambda: ["day"], description="Time "
                                  "windows reported beside 'all'.")
    alerts: list[AlertSpec] = Field(default_factory=list, description="Alert rules.")
    guardrail: GuardrailSpec | None = Field(default=None, description="Promotion "
                                            "guardrail (champion_challenger only).")
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="Of the intervals "
                              "reported and exported.")
    horizon_days: float = Field(default=30.0, gt=0, le=3660, description="Decisions older "
                                "than this are no longer counted (window 'all').")
    refresh_s: float = Field(default=30.0, ge=0, description="How often the figures are "
                             "rebuilt from the store (other replicas' decisions); 0: at "
                             "start only.")
    evaluate_s: float = Field(default=5.0, gt=0, description="How often gauges and alerts "
                              "are updated.")
    timezone: str = Field(default="UTC", description="IANA zone of days and weekdays.")

    @model_validator(mode="after")
    def _check(self) -> MonitoringSpec:
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ValueError(f"group names must be unique, got {names}")
        by_name = {g.name: g for g in self.groups}
        for attribute, group in self.reference.items():
            if attribute not in by_name:
                raise ValueError(f"reference names attribute {attribute!r}, not in {names}")
            if group not in by_name[attribute].group_labels():
                raise ValueError(f"reference {attribute}: {group!r} is not one of "
                                 f"{by_name[attribute].group_labels()}")
        for alert in self.alerts:
            unknown = sorted(set(alert.windows or ()) - {"all", *self.windows})
            if unknown:
                raise ValueError(f"alert on {alert.metric}: windows {unknown} are not "
                                 f"monitored (windows: {self.windows})")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {self.timezone!r}") from None
        return self


@dataclass(frozen=True, slots=True)
class GroupAttribute:
    """One resolved attribute: tells the group of each row.

    Attributes:
        name: attribute name.
        groups: the configured group labels, then :data:`OTHER`.
        reference: the reference group.
        column: column of ``input`` (None for a parameter).
        input: input name (None: the first input).
        parameter: request parameter name (None for a column).
        values: value -> group label (categories), or None.
        edges: band edges (bands), or None.
    """

    name: str
    groups: tuple[str, ...]
    reference: str
    column: int | None
    input: str | None
    parameter: str | None
    values: Mapping[Any, str] | None
    edges: tuple[float, ...] | None

    def group_of(self, value: Any) -> str:
        """The group of one value (:data:`OTHER` when no group holds it)."""
        if self.values is not None:
            found = self.values.get(value)
            if found is None and isinstance(value, float) and value.is_integer():
                found = self.values.get(int(value))
            return found if found is not None else OTHER
        if isinstance(value, bool) or not isinstance(value, int | float):
            return OTHER
        assert self.edges is not None
        i = bisect.bisect_right(self.edges, value) - 1
        return self.groups[i] if 0 <= i < len(self.edges) - 1 else OTHER

    def row_groups(self, inputs: Mapping[str, Any], parameters: Mapping[str, Any]) -> list[str]:
        """The group of each row of a recorded decision (``inputs``: name -> {"shape",
        "data" (flat)}); [] when the decision recorded no data to read."""
        if self.parameter is not None:
            doc = next(iter(inputs.values()), None) if inputs else None
            rows = int(doc["shape"][0]) if doc and doc.get("shape") else 1
            return [self.group_of(parameters.get(self.parameter))] * max(rows, 1)
        doc = inputs.get(self.input) if self.input else next(iter(inputs.values()), None)
        if not doc or "data" not in doc or not doc.get("shape"):
            return []
        shape, data = doc["shape"], doc["data"]
        rows = int(shape[0]) if len(shape) > 1 else 1
        width = len(data) // rows if rows else 0
        if self.column is None or self.column >= width:
            return [OTHER] * rows
        return [self.group_of(data[r * width + self.column]) for r in range(rows)]


def _encoding(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"monitoring.encoding {path}: {exc}") from None


def _resolved_group(group: GroupSpec, encoding: dict[str, Any]) -> GroupSpec:
    """``group`` with its feature name turned into a column and category names into
    codes (through ``encoding``).

    Raises:
        ValueError: a feature or category name the encoding does not have.
    """
    if group.feature is None:
        return group
    names = encoding.get("feature_names") or []
    if group.feature not in names:
        raise ValueError(f"group {group.name!r}: feature {group.feature!r} is not in the "
                         "encoding's feature_names" if names else
                         f"group {group.name!r}: feature names need monitoring.encoding")
    column = names.index(group.feature)
    categories = group.categories
    if categories is not None:
        known = (encoding.get("categorical") or {}).get(str(column)) or []
        categories = {label: [_code(v, known, group) for v in values]
                      for label, values in categories.items()}
    return group.model_copy(update={"feature": None, "column": column,
                                    "categories": categories})


def _code(value: Value, known: list[str], group: GroupSpec) -> Value:
    if not isinstance(value, str):
        return value
    if value not in known:
        raise ValueError(f"group {group.name!r}: category {value!r} is not one of "
                         f"{group.feature}'s {known}")
    return known.index(value)


def resolved(spec: MonitoringSpec) -> MonitoringSpec:
    """``spec`` without the encoding file: feature names as columns, category names as
    codes. What the gateway records in the store, so that ``arbiter report`` needs no
    config.

    Raises:
        ValueError: the encoding file is unreadable or lacks a name the groups use.
    """
    encoding = _encoding(spec.encoding)
    groups = [_resolved_group(g, encoding) for g in spec.groups]
    return spec.model_copy(update={"groups": groups, "encoding": None})


def attributes_of(spec: MonitoringSpec) -> list[GroupAttribute]:
    """The attributes of a spec (see :func:`resolved`).

    Raises:
        ValueError: as :func:`resolved`.
    """
    attributes = []
    for group in resolved(spec).groups:
        labels = group.group_labels()
        values = None
        if group.categories is not None:
            values = {v: label for label, vs in group.categories.items() for v in vs}
        attributes.append(GroupAttribute(
            name=group.name, groups=(*labels, OTHER),
            reference=spec.reference.get(group.name, labels[0]), column=group.column,
            input=group.input, parameter=group.parameter, values=values,
            edges=tuple(group.bands) if group.bands is not None else None,
        ))
    return attributes
