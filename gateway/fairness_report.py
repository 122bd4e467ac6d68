"""``arbiter report``: a deployment's fairness figures, from its decision store.

Reads every decision of the deployment (any number of gateway processes may have
written them), counts them with the deployment's monitoring spec (the one the gateway
recorded in the store, or ``--config``'s), and writes under ``--out``:

* ``fairness.json``: ``{"deployment", "decisions", "first", "last", "spec", "windows":
  {window: figures}, "series": {"every_s", "buckets": [{"start", "models": {model:
  {attribute: {group: {"decisions", "approval_rate", "error_rate"}}}}}]}}``, where each
  window's figures are those of ``GET /v2/deployments/{d}/fairness`` (per bucket, model,
  attribute and group, with the comparisons to the reference group);
* ``fairness_<attribute>.png``: approval rate and error rate per group over time, one
  column per model side by side.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gateway.config import StoreSpec, load_config
from gateway.decisions import Decision, StoreError, build_store
from gateway.fairness import group_figures
from gateway.groups import MonitoringSpec, attributes_of
from gateway.monitoring import MONITORING_VALUE, figures_of
from gateway.tally import Tally

__all__ = ["run_report", "series", "every_s_for"]

_STEPS_S = (1, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86_400, 7 * 86_400)


async def _read(spec: StoreSpec, deployment: str) -> tuple[Any, list[Decision]]:
    store = build_store(spec)
    await store.open([deployment])
    try:
        recorded = store.state.get_value(deployment, MONITORING_VALUE)
        return recorded, await store.list(deployment)
    finally:
        await store.close()


def every_s_for(first: float, last: float, points: int = 24) -> int:
    """The smallest of 1, 5, 10, 30 s, 1, 5, 15 min, 1, 6 h, 1 day, 1 week that draws the
    span in at most ``points`` buckets."""
    span = max(last - first, 1.0)
    return next((s for s in _STEPS_S if span / s <= points), _STEPS_S[-1])


def series(decisions: list[Decision], spec: MonitoringSpec,
           every_s: int) -> list[dict[str, Any]]:
    """Per bucket of ``every_s`` seconds (from the first decision's), per model,
    attribute and group: decisions, approval rate and error rate (1 - accuracy)."""
    attributes = attributes_of(spec)
    buckets: dict[int, Tally] = {}
    start = decisions[0].time if decisions else 0.0
    for decision in decisions:
        index = int((decision.time - start) // every_s)
        tally = buckets.get(index)
        if tally is None:
            tally = buckets[index] = Tally(attributes, spec.approval)
        tally.add_decision(decision)
    out = []
    for index in sorted(buckets):
        tally = buckets[index]
        models: dict[str, Any] = {}
        for (model, attribute, group), counts in sorted(tally.all_counts().items()):
            figures = group_figures(counts, spec.confidence)
            accuracy = figures["accuracy"]
            models.setdefault(model, {}).setdefault(attribute, {})[group] = {
                "decisions": figures["decisions"], "approval_rate": figures["approval_rate"],
                "error_rate": None if accuracy is None else 1 - accuracy}
        when = dt.datetime.fromtimestamp(start + index * every_s, dt.UTC)
        out.append({"start": when.isoformat(timespec="seconds"), "models": models})
    return out


def _spec(recorded: Any, config: str | Path | None, deployment: str) -> MonitoringSpec:
    if config is not None:
        spec = load_config(config).deployments.get(deployment)
        if spec is None or spec.monitoring is None:
            raise StoreError(f"{config}: deployment {deployment!r} has no monitoring block")
        return spec.monitoring
    if recorded is None:
        raise StoreError(f"the store holds no monitoring spec of deployment {deployment!r} "
                         "(a gateway with its monitoring block records it); pass --config")
    return MonitoringSpec.model_validate(recorded)


def run_report(store: StoreSpec, deployment: str, out: str | Path, *,
               config: str | Path | None = None, every_s: int | None = None) -> dict:
    """Write ``fairness.json`` and one PNG per attribute under ``out``; returns the
    document.

    Raises:
        StoreError: the store cannot be read, or no monitoring spec is known.
    """
    recorded, decisions = asyncio.run(_read(store, deployment))
    spec = _spec(recorded, config, deployment)
    attributes = attributes_of(spec)
    tally = Tally(attributes, spec.approval)
    tally.add_all(decisions)
    zone = ZoneInfo(spec.timezone)
    first = decisions[0].time if decisions else 0.0
    last = decisions[-1].time if decisions else 0.0
    step = every_s or every_s_for(first, last)
    doc = {
        "deployment": deployment, "decisions": len(decisions), "first": first, "last": last,
        "spec": spec.model_dump(mode="json"),
        "windows": {w: figures_of(tally, attributes, w, zone, spec.confidence)
                    for w in ("all", *spec.windows)},
        "series": {"every_s": step, "buckets": series(decisions, spec, step)},
    }
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    (target / "fairness.json").write_text(json.dumps(doc, indent=2, allow_nan=False))
    for attribute in attributes:
        _chart(doc, attribute.name, attribute.reference,
               target / f"fairness_{attribute.name}.png")
    _print(doc)
    return doc


def _chart(doc: dict, attribute: str, reference: str, path: Path) -> None:
    """Approval and error rate per group over time, one column per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.dates import DateFormatter

    buckets = doc["series"]["buckets"]
    models = sorted({m for b in buckets for m in b["models"]})
    if not models:
        return
    groups = [g for g in _group_order(doc, attribute)
              if any(g in b["models"].get(m, {}).get(attribute, {}) for b in buckets
                     for m in models)]
    times = [dt.datetime.fromisoformat(b["start"]) for b in buckets]
    fig, axes = plt.subplots(2, len(models), figsize=(4.4 * len(models), 6.6), sharey="row",
                             squeeze=False)
    colours = plt.get_cmap("tab10")
    for column, model in enumerate(models):
        for row, (metric, name) in enumerate((("approval_rate", "approval rate"),
                                              ("error_rate", "error rate"))):
            ax = axes[row][column]
            for i, group in enumerate(groups):
                ys = [_value(b, model, attribute, group, metric) for b in buckets]
                overall = _overall_value(doc, model, attribute, group, metric)
                label = f"{group} (reference)" if group == reference else group
                rows = _overall_value(doc, model, attribute, group, "decisions")
                label += f", n={rows:.0f}" if not math.isnan(rows) else ""
                ax.plot(times, ys, marker="o", ms=3, color=colours(i % 10), label=label,
                        linewidth=2.2 if group == reference else 1.4)
                if not math.isnan(overall):  # the whole period's rate, for scale
                    ax.axhline(overall, color=colours(i % 10), linestyle="--", linewidth=1,
                               alpha=0.7)
            span = doc["last"] - doc["first"]
            ax.xaxis.set_major_formatter(DateFormatter(
                "%H:%M:%S" if span < 3600 else "%H:%M" if span < 86_400 else "%m-%d %H:%M"))
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
            ax.set_title(f"{model}: {name}" + _overall(doc, model, attribute, metric))
            if column == 0:
                ax.set_ylabel(f"{name} per {_every(doc['series']['every_s'])}")
            ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    axes[0][0].legend(title=attribute, fontsize=8)
    fig.suptitle(f"{doc['deployment']}: approval and error rate by {attribute} "
                 f"({doc['decisions']} decisions, UTC; dashed: whole period)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _group_order(doc: dict, attribute: str) -> list[str]:
    group = next(g for g in doc["spec"]["groups"] if g["name"] == attribute)
    if group.get("categories"):
        labels = list(group["categories"])
    elif group.get("labels"):
        labels = list(group["labels"])
    else:
        edges = group["bands"]
        labels = [f"{lo:g}-{hi:g}" for lo, hi in zip(edges, edges[1:], strict=False)]
    return [*labels, "other"]


def _value(bucket: dict, model: str, attribute: str, group: str, metric: str) -> float:
    figures = bucket["models"].get(model, {}).get(attribute, {}).get(group)
    value = None if figures is None else figures[metric]
    return math.nan if value is None else value


def _overall_value(doc: dict, model: str, attribute: str, group: str, metric: str) -> float:
    """``metric`` of a group over the whole period (NaN when undefined)."""
    totals = doc["windows"]["all"]["buckets"]
    groups = totals[0]["models"].get(model, {}).get(attribute, {}).get("groups", {}) \
        if totals else {}
    figures = groups.get(group)
    if figures is None:
        return math.nan
    if metric == "error_rate":
        value = None if figures["accuracy"] is None else 1 - figures["accuracy"]
    else:
        value = figures[metric]
    return math.nan if value is None else float(value)


def _overall(doc: dict, model: str, attribute: str, metric: str) -> str:
    if metric != "approval_rate":
        return ""
    totals = doc["windows"]["all"]["buckets"]
    fairness = totals[0]["models"].get(model, {}).get(attribute, {}).get("fairness", {}) \
        if totals else {}
    ratios = [f["disparate_impact"]["value"] for f in fairness.values()
              if f["disparate_impact"]["value"] is not None]
    return f"\n(lowest disparate impact {min(ratios):.2f})" if ratios else ""


def _every(seconds: int) -> str:
    for unit, size in (("week", 604_800), ("day", 86_400), ("h", 3600), ("min", 60),
                       ("s", 1)):
        if seconds % size == 0:
            count = seconds // size
            return unit if count == 1 else f"{count} {unit}"
    return f"{seconds} s"


def _print(doc: dict) -> None:
    totals = doc["windows"]["all"]["buckets"]
    print(f"{doc['deployment']}: {doc['decisions']} decisions")
    for model, attributes in (totals[0]["models"].items() if totals else ()):
        for attribute, figures in attributes.items():
            cells = []
            for group, f in figures["groups"].items():
                accuracy = "n/a" if f["accuracy"] is None else f"{f['accuracy']:.3f}"
                approval = "n/a" if f["approval_rate"] is None else f"{f['approval_rate']:.3f}"
                di = figures["fairness"].get(group, {}).get("disparate_impact", {}).get("value")
                extra = "" if di is None else f", DI {di:.2f}"
                cells.append(f"{group} n={f['decisions']} approved {approval} "
                             f"accuracy {accuracy}{extra}")
            print(f"  {model} {attribute}: " + "; ".join(cells))
