"""Fairness and outcome monitoring of one deployment, as decisions and feedback stream
in: per model, protected group and time window, the figures of ``gateway.fairness``,
exported as gauges, checked by alert rules, served by
``GET /v2/deployments/{d}/fairness`` and held by the promotion guardrail.

Cost on the request path: each model's output adds a few counter updates per attribute
(:class:`~gateway.tally.Tally`); intervals, gauges and alerts are computed every
``evaluate_s``, off the request path.

Figures survive restarts and agree across processes and replicas because the store is
their source: at start, and every ``refresh_s``, the monitor rebuilds its counts from
the deployment's stored decisions (every process's), then adds back what this process
saw that the read could not hold yet (decisions younger than the time their shadows and
write-behind take to settle, and feedback committed while it read). A corrected truth
replaces the one counted when this process counted it since the last rebuild; any
other correction asks for a rebuild at once.

Alerts fire only when the whole confidence interval lies past the threshold, so a group
too small to tell raises no alarm; each change is logged with the deployment, model,
attribute, group and window.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from gateway.decisions import Decision, DecisionStore
from gateway.fairness import Counts, Estimate, group_fairness, group_figures, group_rates
from gateway.groups import (
    OTHER,
    AlertSpec,
    GroupAttribute,
    MonitoringSpec,
    attributes_of,
    resolved,
)
from gateway.guardrail import verdict
from gateway.tally import Key, Tally, bucket_label, flat_values, hour_of

if TYPE_CHECKING:
    from gateway.deployment import Deployment
    from gateway.metrics import GatewayMetrics

__all__ = ["FairnessMonitor", "MONITORING_VALUE", "figures_of", "watch"]

log = logging.getLogger("arbiter.monitoring")

MONITORING_VALUE = "monitoring"
"""Store value (of the deployment's router key) holding the resolved monitoring spec."""

_PAGE = 5000
_JOURNAL_MAX = 500_000
_FEEDBACK_MARGIN_S = 60.0
_RECENT = 4096  # decisions whose groups are kept for their shadows and feedback


@dataclass(slots=True)
class _Entry:
    """One local event, kept until a rebuild from the store holds it."""

    decision_id: str
    when: float
    arrival: float
    groups: list[list[tuple[str, str]]]
    model: str | None = None
    labels: list[Any] | None = None
    labels_by_model: dict[str, list[Any]] | None = None
    truth: list[Any] | None = None
    feedback_time: float | None = None


class FairnessMonitor:
    """The streaming monitor of one deployment (see the module docstring).

    Args:
        deployment: deployment name.
        spec: its ``monitoring:`` block.
        store: the decision store (source of the figures).
        metrics: gauges to export to; None: none.
        settle_s: seconds after which a decision's shadow outputs are in the store.
        clock: Unix seconds.

    Raises:
        ValueError: the spec names a feature or category the encoding file lacks.
    """

    def __init__(self, deployment: str, spec: MonitoringSpec, store: DecisionStore,
                 metrics: GatewayMetrics | None = None, *, settle_s: float = 7.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.deployment = deployment
        self.spec = spec
        self.store = store
        self.metrics = metrics
        self.settle_s = settle_s
        self.clock = clock
        self.attributes = attributes_of(spec)
        self.zone = ZoneInfo(spec.timezone)
        self.windows = ("all", *spec.windows)
        self.tally = Tally(self.attributes, spec.approval)
        self.firing: dict[tuple, dict[str, Any]] = {}
        self._journal: list[_Entry] = []
        self._recent: dict[str, list[list[tuple[str, str]]]] = {}
        self._rebuilt = False
        self._refresh = asyncio.Event()
        self._task: asyncio.Task | None = None

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Record the spec in the store, rebuild the figures, start the loop."""
        if self.store.spec.inputs != "store" and any(a.column is not None
                                                     for a in self.attributes):
            log.warning("%s: store.inputs is %r, so decisions are stored without their "
                        "features: figures of column attributes are incomplete (a rebuild "
                        "from the store cannot tell their groups)", self.deployment,
                        self.store.spec.inputs)
        doc = resolved(self.spec).model_dump(mode="json")
        if self.store.state.get_value(self.deployment, MONITORING_VALUE) != doc:
            await self.store.put_value(self.deployment, MONITORING_VALUE, doc)
        await self.rebuild(settle=False)
        self.evaluate()
        self._task = asyncio.create_task(self._loop(), name=f"monitor-{self.deployment}")

    async def close(self) -> None:
        """Stop the loop."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        refresh_s = self.spec.refresh_s
        next_refresh = time.monotonic() + refresh_s
        while True:
            try:
                await asyncio.wait_for(self._refresh.wait(), self.spec.evaluate_s)
            except TimeoutError:
                pass
            try:
                if self._refresh.is_set() or (refresh_s and time.monotonic() >= next_refresh):
                    self._refresh.clear()
                    await self.rebuild(settle=bool(refresh_s))  # no journal: read all
                    next_refresh = time.monotonic() + refresh_s
                self.evaluate()
            except Exception:
                log.exception("%s: fairness monitoring failed; retrying", self.deployment)

    def request_refresh(self) -> None:
        """Rebuild from the store soon (after a corrected feedback)."""
        self._refresh.set()

    # -- events (request path: cheap, never raise) ---------------------------------
    def observe_decision(self, decision: Decision) -> None:
        """A new decision: its routed model's output."""
        self.observe_output(decision, decision.routed, decision.outputs.get(decision.routed))

    def observe_output(self, decision: Decision, model: str,
                       outputs: Mapping[str, Any] | None) -> None:
        """One model's output on a decision (routed or shadow)."""
        try:
            labels = self.tally.labels(outputs)
            if labels is None or decision.status != "ok":
                return
            groups = self._groups(decision)
            self.tally.add_outputs(decision.time, groups, model, labels)
            self._keep(_Entry(decision.id, decision.time, self.clock(), groups, model, labels))
        except Exception:
            log.exception("%s: counting decision %s failed", self.deployment, decision.id)

    def observe_feedback(self, decision: Decision, feedback: Mapping[str, Any],
                         correction: bool) -> None:
        """A committed feedback; a truth scores every model the decision recorded (a
        correction replaces the truth this process counted, or asks for a rebuild)."""
        if correction:
            self._correct(decision, feedback)
            return
        truth = feedback.get("truth")
        if truth is None or decision.status != "ok":
            return
        try:
            groups = self._groups(decision)
            labels = {m: v for m, o in decision.outputs.items()
                      if (v := self.tally.labels(o)) is not None}
            values = flat_values(truth)
            self.tally.add_truth(decision.time, groups, labels, values)
            self._keep(_Entry(decision.id, decision.time, self.clock(), groups,
                              labels_by_model=labels, truth=values,
                              feedback_time=float(feedback.get("time", 0.0))))
        except Exception:
            log.exception("%s: counting feedback of %s failed", self.deployment, decision.id)

    def _correct(self, decision: Decision, feedback: Mapping[str, Any]) -> None:
        """Replace the truth of a decision whose feedback this process counted since the
        last rebuild; any other correction is read from the store by a rebuild."""
        truth = feedback.get("truth")
        old = next((e for e in reversed(self._journal)
                    if e.decision_id == decision.id and e.truth is not None), None)
        if old is None or truth is None or not self.spec.refresh_s:
            self.request_refresh()
            return
        labels, values = old.labels_by_model or {}, flat_values(truth)
        self.tally.add_truth(old.when, old.groups, labels, old.truth or [], sign=-1)
        self.tally.add_truth(old.when, old.groups, labels, values)
        old.truth, old.arrival = values, self.clock()
        old.feedback_time = float(feedback.get("time", 0.0))

    def _groups(self, decision: Decision) -> list[list[tuple[str, str]]]:
        """The groups of a decision's rows, computed once for its outputs and feedback."""
        groups = self._recent.get(decision.id)
        if groups is None:
            groups = self.tally.row_groups(decision.inputs, decision.parameters)
            self._recent[decision.id] = groups
            if len(self._recent) > _RECENT:
                del self._recent[next(iter(self._recent))]
        return groups

    def _keep(self, entry: _Entry) -> None:
        if self.spec.refresh_s or not self._rebuilt:
            self._journal.append(entry)
            if len(self._journal) > _JOURNAL_MAX:
                del self._journal[: len(self._journal) // 2]

    # -- rebuild from the store ----------------------------------------------------
    async def rebuild(self, settle: bool = True) -> None:
        """Count the stored decisions of the horizon again (every process's), then add
        what this process saw that the read could not hold; replaces the counts.

        Args:
            settle: leave out (to this process's own record) the decisions younger than
                ``settle_s``, whose shadow outputs may still be on their way; False at
                start, when this process has no record and every decision counts.
        """
        started = self.clock()
        since = started - self.spec.horizon_days * 86_400
        cutoff = started - self.settle_s if settle else started
        tally = Tally(self.attributes, self.spec.approval)
        recent: dict[str, float] = {}
        async for page in self._pages(since, cutoff):
            await asyncio.to_thread(_fold, tally, page, recent, started - _FEEDBACK_MARGIN_S)
        kept = []
        for entry in self._journal:
            late = entry.truth is not None and entry.arrival >= started \
                and recent.get(entry.decision_id) != entry.feedback_time
            if entry.when >= cutoff or late:
                _replay(tally, entry)
            if entry.when >= cutoff or entry.arrival >= started:
                kept.append(entry)
        self._journal = kept
        tally.trim(since)
        self.tally = tally
        self._rebuilt = True

    async def _pages(self, since: float, until: float) -> AsyncIterator[list[Decision]]:
        """The deployment's decisions in [since, until), in pages, oldest first."""
        limit, after = _PAGE, None
        while True:
            raw = await self.store.list(self.deployment, since, until, limit)
            page = raw if after is None else [d for d in raw if d.time > since or d.id > after]
            if page:
                yield page
            if len(raw) < limit:
                return
            if not page and raw[-1].time == since:  # a page of one instant: read more
                limit *= 2
                continue
            since, after = raw[-1].time, raw[-1].id

    # -- figures -------------------------------------------------------------------
    def figures(self, window: str = "all", limit: int | None = None,
                confidence: float | None = None) -> dict[str, Any]:
        """The document of ``GET /v2/deployments/{d}/fairness?window=...``.

        Raises:
            ValueError: a window that is not monitored.
        """
        if window not in self.windows:
            raise ValueError(f"window {window!r} is not monitored; one of {list(self.windows)}")
        self.tally.trim(self.clock() - self.spec.horizon_days * 86_400)
        doc = figures_of(self.tally, self.attributes, window, self.zone,
                         confidence or self.spec.confidence, limit)
        return {"deployment": self.deployment, "timezone": self.spec.timezone,
                "approval": self.spec.approval.model_dump(),
                "horizon_days": self.spec.horizon_days, **doc,
                "alerts": list(self.firing.values())}

    def current(self, window: str) -> dict[Key, Counts]:
        """The counts of the current bucket of ``window``."""
        if window == "all":
            return self.tally.all_counts()
        label = bucket_label(window, hour_of(self.clock()), self.zone)
        return self.tally.buckets(window, self.zone).get(label, {})

    def evaluate(self) -> None:
        """Forget what left the horizon; update the gauges and the alerts."""
        self.tally.trim(self.clock() - self.spec.horizon_days * 86_400)
        current = {window: self.current(window) for window in self.windows}
        if self.metrics is not None:
            for window, counts in current.items():
                self._export(window, counts)
        self._alerts(current)

    def _export(self, window: str, counts: dict[Key, Counts]) -> None:
        gauge = self.metrics.fairness  # type: ignore[union-attr]
        confidence = self.spec.confidence
        for model in sorted({k[0] for k in counts}):
            for attribute in self.attributes:
                reference = counts.get((model, attribute.name, attribute.reference), Counts())
                for group in _groups(attribute, model, counts):
                    mine = counts.get((model, attribute.name, group), Counts())
                    values: dict[str, float | None] = {"decisions": mine.decisions}
                    values.update({m: e.value for m, e in group_rates(mine, confidence).items()})
                    if group != attribute.reference:
                        for name, e in group_fairness(mine, reference, confidence).items():
                            values.update({name: e.value, f"{name}_ci_low": e.low,
                                           f"{name}_ci_high": e.high})
                    for metric, value in values.items():
                        gauge.labels(self.deployment, model, attribute.name, group, metric,
                                     window).set(math.nan if value is None else value)

    def _alerts(self, current: dict[str, dict[Key, Counts]]) -> None:
        for index, rule in enumerate(self.spec.alerts):
            for window in rule.windows or self.windows:
                counts = current.get(window)
                if counts is None:
                    continue
                for model in sorted({k[0] for k in counts}):
                    for attribute in self.attributes:
                        for group, estimate in _checked(rule, attribute, model, counts):
                            self._alert(index, rule, window, model, attribute, group, estimate)

    def _alert(self, index: int, rule: AlertSpec, window: str, model: str,
               attribute: GroupAttribute, group: str, estimate: Estimate) -> None:
        fires = (rule.below is not None and estimate.high is not None
                 and estimate.high < rule.below) or \
                (rule.above is not None and estimate.low is not None and estimate.low > rule.above)
        key = (index, window, model, attribute.name, group)
        if self.metrics is not None:
            self.metrics.fairness_alert.labels(self.deployment, model, attribute.name, group,
                                               rule.metric, window).set(int(fires))
        threshold = f"below {rule.below}" if rule.below is not None else f"above {rule.above}"
        text = (f"deployment {self.deployment!r}, model {model!r}, {attribute.name} group "
                f"{group!r} (reference {attribute.reference!r}), window {window!r}: "
                f"{rule.metric} {_fmt(estimate.value)} [{_fmt(estimate.low)}, "
                f"{_fmt(estimate.high)}] at {rule.confidence:.0%} confidence, {threshold}")
        if fires and key not in self.firing:
            log.warning("fairness alert: %s", text)
        elif not fires and key in self.firing:
            log.info("fairness alert cleared: %s", text)
        if fires:
            self.firing[key] = {"metric": rule.metric, "model": model,
                                "attribute": attribute.name, "group": group,
                                "reference": attribute.reference, "window": window,
                                "confidence": rule.confidence, "below": rule.below,
                                "above": rule.above, **estimate.as_dict()}
        else:
            self.firing.pop(key, None)

    # -- promotion guardrail (called on the store's writer thread) ---------------------
    def guard(self, champion: str, challenger: str) -> dict[str, Any]:
        """Whether ``challenger`` may replace ``champion``: its worst group on the
        guardrail's measure (window ``all``) is not worse than the champion's by more
        than the tolerance, for every held attribute. Reads totals only (safe from the
        store's writer thread).

        Returns:
            ``{"allowed", "metric", "tolerance", "min_decisions", "attributes": {name:
            {"allowed", "champion", "challenger", "worse_by", "groups"}}}``.
        """
        assert self.spec.guardrail is not None
        return verdict(self.spec.guardrail, self.attributes, self.tally, champion,
                       challenger, self.spec.confidence)


def _fold(tally: Tally, decisions: list[Decision], recent: dict[str, float],
          after: float) -> None:
    """Count ``decisions`` (off the event loop); note the feedback times past ``after``."""
    tally.add_all(decisions)
    for decision in decisions:
        when = (decision.feedback or {}).get("time")
        if when is not None and when >= after:
            recent[decision.id] = float(when)


def _replay(tally: Tally, entry: _Entry) -> None:
    if entry.truth is not None:
        tally.add_truth(entry.when, entry.groups, entry.labels_by_model or {}, entry.truth)
    elif entry.model is not None and entry.labels is not None:
        tally.add_outputs(entry.when, entry.groups, entry.model, entry.labels)


def _groups(attribute: GroupAttribute, model: str, counts: Mapping[Key, Counts]) -> list[str]:
    """The configured groups, and ``other`` when it holds decisions."""
    groups = list(attribute.groups[:-1])
    if (model, attribute.name, OTHER) in counts:
        groups.append(OTHER)
    return groups


def _checked(rule: AlertSpec, attribute: GroupAttribute, model: str,
             counts: Mapping[Key, Counts]) -> list[tuple[str, Estimate]]:
    """(group, estimate) of the rule's metric for each group of ``attribute`` (the
    reference excluded for comparisons)."""
    reference = counts.get((model, attribute.name, attribute.reference), Counts())
    out = []
    for group in _groups(attribute, model, counts):
        mine = counts.get((model, attribute.name, group), Counts())
        rates = group_rates(mine, rule.confidence)
        if rule.metric in rates:
            out.append((group, rates[rule.metric]))
        elif group != attribute.reference:
            out.append((group, group_fairness(mine, reference, rule.confidence)[rule.metric]))
    return out


def figures_of(tally: Tally, attributes: list[GroupAttribute], window: str, zone: ZoneInfo,
               confidence: float, limit: int | None = None) -> dict[str, Any]:
    """``{"window", "confidence", "buckets": [{"bucket", "models": {model: {attribute:
    {"reference", "groups": {group: figures}, "fairness": {group: {metric: {"value",
    "ci_low", "ci_high"}}}}}}}]}``, oldest bucket first, the last ``limit`` buckets."""
    buckets = list(tally.buckets(window, zone).items())
    if limit is not None:
        buckets = buckets[-limit:] if limit > 0 else []
    out = []
    for label, counts in buckets:
        models = {}
        for model in sorted({k[0] for k in counts}):
            models[model] = {a.name: _attribute_figures(a, model, counts, confidence)
                             for a in attributes}
        out.append({"bucket": label, "models": models})
    return {"window": window, "confidence": confidence, "buckets": out}


def _attribute_figures(attribute: GroupAttribute, model: str,
                       counts: Mapping[Key, Counts], confidence: float) -> dict[str, Any]:
    reference = counts.get((model, attribute.name, attribute.reference), Counts())
    groups, fairness = {}, {}
    for group in _groups(attribute, model, counts):
        mine = counts.get((model, attribute.name, group), Counts())
        groups[group] = group_figures(mine, confidence)
        if group != attribute.reference:
            fairness[group] = {m: e.as_dict()
                               for m, e in group_fairness(mine, reference, confidence).items()}
    return {"reference": attribute.reference, "groups": groups, "fairness": fairness}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def watch(deployment: Deployment, spec: MonitoringSpec,
          metrics: GatewayMetrics | None) -> FairnessMonitor:
    """Monitor ``deployment``: its new decisions, shadow outputs and feedback feed a
    :class:`FairnessMonitor`, whose guard a champion-challenger router consults when
    the spec has a guardrail. Start it with :meth:`FairnessMonitor.start`.

    Raises:
        ValueError: as :class:`FairnessMonitor`.
    """
    from routers.champion_challenger import ChampionChallengerRouter

    store = deployment.store
    settle_s = deployment.shadows.wait_s + 2 * store.spec.flush_interval_ms / 1000 + 0.5
    monitor = FairnessMonitor(deployment.name, spec, store, metrics, settle_s=settle_s)
    deployment.on_decision = monitor.observe_decision
    deployment.shadows.on_output = monitor.observe_output
    deployment.desk.on_feedback = monitor.observe_feedback
    if spec.guardrail is not None and isinstance(deployment.router, ChampionChallengerRouter):
        deployment.router.guard = monitor.guard
    return monitor

