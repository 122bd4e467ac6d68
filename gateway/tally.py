"""Counts of a deployment's decisions per model, protected group and hour: what the
fairness monitor (``gateway.monitoring``) and ``arbiter report`` add up.

A decision adds, for each model whose output it recorded (routed, shadows and
challengers alike) and each row, one decision (and maybe one approval) to the row's group
of every attribute; its truth feedback adds, for each of those models, the outcome
counts (scored, correct, positives and true positives, negatives and false positives).
Both land in the hour of the *decision*, so a window's figures describe the decisions
made in it, whenever their outcomes arrived. Hours are UTC hours; days and weekdays
are those of a time zone, each hour counted in the day its start falls in.

Counts are plain lists in :data:`~gateway.fairness.COUNT_FIELDS` order, updated in
place, keyed per model by interned (attribute, group) pairs: a model's output costs
two dictionary updates per attribute and row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any
from zoneinfo import ZoneInfo

from gateway.fairness import Counts
from gateway.groups import ApprovalSpec, GroupAttribute

__all__ = ["Key", "Tally", "bucket_label", "flat_values", "hour_of"]

Key = tuple[str, str, str]
"""(model, attribute, group)."""

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def hour_of(unix_s: float) -> int:
    """The UTC hour a time falls in (hours since the epoch)."""
    return int(unix_s // 3600)


def flat_values(value: Any) -> list[Any]:
    """A (nested) list flattened in row-major order; a scalar as a one-item list."""
    if not isinstance(value, list | tuple):
        return [value]
    out: list[Any] = []
    for item in value:
        out.extend(flat_values(item))
    return out


class Tally:
    """Counts per hour, model and (attribute, group), and their totals.

    Args:
        attributes: the deployment's protected attributes.
        approval: which output value approves.
    """

    def __init__(self, attributes: list[GroupAttribute], approval: ApprovalSpec) -> None:
        self.attributes = attributes
        self.output = approval.output
        self.approve = approval.value
        self.hours: dict[int, dict[str, dict[tuple[str, str], list[int]]]] = {}
        self.totals: dict[str, dict[tuple[str, str], list[int]]] = {}
        self._keys = [{g: (a.name, g) for g in a.groups} for a in attributes]

    # -- adding ------------------------------------------------------------------
    def row_groups(self, inputs: Mapping[str, Any],
                   parameters: Mapping[str, Any]) -> list[list[tuple[str, str]]]:
        """Per attribute, the (attribute, group) of each row of a decision's inputs."""
        return [[keys[g] for g in a.row_groups(inputs, parameters)]
                for a, keys in zip(self.attributes, self._keys, strict=True)]

    def labels(self, outputs: Mapping[str, Any] | None) -> list[Any] | None:
        """The decision output's values of one model (None when not recorded)."""
        doc = (outputs or {}).get(self.output)
        return doc.get("data") if isinstance(doc, dict) else None

    def _cells(self, hour: int, model: str):
        bucket = self.hours.get(hour)
        if bucket is None:
            bucket = self.hours[hour] = {}
        cells = bucket.get(model)
        if cells is None:
            cells = bucket[model] = {}
        totals = self.totals.get(model)
        if totals is None:
            totals = self.totals[model] = {}
        return cells, totals

    def add_outputs(self, when: float, groups: list[list[tuple[str, str]]], model: str,
                    labels: list[Any]) -> None:
        """One model's decisions: ``labels`` per row, ``groups`` from :meth:`row_groups`."""
        cells, totals = self._cells(hour_of(when), model)
        approve = self.approve
        for keys in groups:
            if len(keys) != len(labels):
                continue
            for key, label in zip(keys, labels, strict=True):
                cell = cells.get(key)
                if cell is None:
                    cell = cells[key] = [0] * 8
                total = totals.get(key)
                if total is None:
                    total = totals[key] = [0] * 8
                approved = label == approve
                cell[0] += 1
                total[0] += 1
                if approved:
                    cell[1] += 1
                    total[1] += 1

    def add_truth(self, when: float, groups: list[list[tuple[str, str]]],
                  labels_by_model: Mapping[str, list[Any]], truth: list[Any],
                  sign: int = 1) -> None:
        """A decision's true outcome per row, scored against each model's labels
        (``sign`` -1 takes a replaced truth back)."""
        hour = hour_of(when)
        for model, labels in labels_by_model.items():
            if len(labels) != len(truth):
                continue
            cells, totals = self._cells(hour, model)
            for keys in groups:
                if len(keys) != len(truth):
                    continue
                for key, label, outcome in zip(keys, labels, truth, strict=True):
                    cell = cells.get(key)
                    if cell is None:
                        cell = cells[key] = [0] * 8
                    total = totals.get(key)
                    if total is None:
                        total = totals[key] = [0] * 8
                    _score(cell, label, outcome, self.approve, sign)
                    _score(total, label, outcome, self.approve, sign)

    def add_decision(self, decision: Any) -> None:
        """A stored decision (``gateway.decisions.Decision``): every model's output and
        its truth feedback, if any."""
        if decision.status != "ok":
            return
        groups = self.row_groups(decision.inputs, decision.parameters)
        labels_by_model = {}
        for model, outputs in decision.outputs.items():
            labels = self.labels(outputs)
            if labels is not None:
                labels_by_model[model] = labels
                self.add_outputs(decision.time, groups, model, labels)
        truth = (decision.feedback or {}).get("truth")
        if truth is not None:
            self.add_truth(decision.time, groups, labels_by_model, flat_values(truth))

    def add_all(self, decisions: Iterable[Any]) -> None:
        """:meth:`add_decision` of each."""
        for decision in decisions:
            self.add_decision(decision)

    def trim(self, before: float) -> None:
        """Forget the hours before ``before`` (Unix seconds), totals included."""
        first = hour_of(before)
        for hour in [h for h in self.hours if h < first]:
            for model, cells in self.hours.pop(hour).items():
                totals = self.totals[model]
                for key, cell in cells.items():
                    total = totals[key]
                    for i, value in enumerate(cell):
                        total[i] -= value

    # -- reading -----------------------------------------------------------------
    def models(self) -> list[str]:
        """Every model counted, sorted."""
        return sorted(self.totals)

    def total(self, key: Key) -> Counts:
        """The totals of one (model, attribute, group) (zeros when never counted). Safe
        to call from another thread while the loop adds."""
        cell = self.totals.get(key[0], {}).get((key[1], key[2]))
        return Counts.of(list(cell)) if cell is not None else Counts()

    def all_counts(self) -> dict[Key, Counts]:
        """Every (model, attribute, group) with its totals."""
        return {(model, *key): Counts.of(cell)
                for model, cells in self.totals.items() for key, cell in cells.items()}

    def buckets(self, window: str, zone: ZoneInfo) -> dict[str, dict[Key, Counts]]:
        """Counts per bucket of ``window`` (``all``, ``hour``, ``day``, ``day_of_week``),
        oldest bucket first: ``all`` -> {"all": ...}; hours as ``YYYY-MM-DDTHH:00Z``;
        days as ``YYYY-MM-DD`` and weekdays as ``monday``... in ``zone``."""
        if window == "all":
            return {"all": self.all_counts()}
        sums: dict[str, dict[Key, list[int]]] = {}
        for hour in sorted(self.hours):
            into = sums.setdefault(bucket_label(window, hour, zone), {})
            for model, cells in self.hours[hour].items():
                for key, cell in cells.items():
                    acc = into.get((model, *key))
                    if acc is None:
                        into[(model, *key)] = list(cell)
                    else:
                        for i, value in enumerate(cell):
                            acc[i] += value
        if window == "day_of_week":
            sums = {day: sums[day] for day in _WEEKDAYS if day in sums}
        return {label: {k: Counts.of(v) for k, v in cells.items()}
                for label, cells in sums.items()}


def bucket_label(window: str, hour: int, zone: ZoneInfo) -> str:
    """The bucket of ``window`` an hour (since the epoch, UTC) belongs to."""
    start = dt.datetime.fromtimestamp(hour * 3600, dt.UTC)
    if window == "hour":
        return start.strftime("%Y-%m-%dT%H:00Z")
    local = start.astimezone(zone)
    if window == "day":
        return local.strftime("%Y-%m-%d")
    if window == "day_of_week":
        return _WEEKDAYS[local.weekday()]
    raise ValueError(f"unknown window {window!r}")


def _score(cell: list[int], label: Any, outcome: Any, approve: Any, sign: int) -> None:
    approved = sign if label == approve else 0
    cell[2] += sign
    cell[3] += sign if label == outcome else 0
    if outcome == approve:
        cell[4] += sign
        cell[5] += approved
    else:
        cell[6] += sign
        cell[7] += approved
