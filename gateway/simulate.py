"""``arbiter simulate``: run the routers of a gateway config against recorded outcomes.

Outcomes are a CSV file with a header of model keys and one row per request; each cell
is that model's reward for that request in [0, 1] (for classifiers, 1 when its answer
was right and 0 when wrong)::

    lr,gbm,mlp
    1,1,0
    0,1,1

``python -m examples.credit.outcomes`` makes one from the German credit hold-out set.

Each seed draws ``steps`` requests from the rows with replacement (the same requests
for every deployment of that seed) and runs each deployment's real router class
(:func:`routers.build_router`) over them: ``route`` chooses the answering model and
the shadows, and after ``feedback_delay`` further requests the rewards of every model
the decision scored (routed and shadows, as a truth feedback does in the gateway) are
learned through ``router.learning(outcome)`` applied by a
:class:`routers.state.InMemoryStateStore`, the path the gateway's store takes. The
router's clock is the number of requests routed so far, so promotion times are counts
of decisions.

Reported per deployment, per seed and over the seeds: cumulative regret against the
best of the deployment's models in hindsight (the one with the largest total reward on
that seed's requests), the traffic share of each model over time, the promotions
(decision, model) and the false-promotion rate: the share of seeds with at least one
promotion of a model whose mean reward over the outcome rows is below the champion it
replaced.
"""

from __future__ import annotations

import json
import random
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gateway.config import ConfigError, GatewayConfig, load_config
from protos.protocol import InferenceRequest
from routers import Outcome, RouterSpec, build_router
from routers.state import InMemoryStateStore

__all__ = [
    "Outcomes",
    "Run",
    "bernoulli_outcomes",
    "load_outcomes",
    "plot",
    "promotion_trials",
    "run_router",
    "run_simulate",
    "simulate",
    "write_outcomes",
]

WINDOWS = 20
"""Traffic share is reported over this many equal windows of requests."""
POINTS = 100
"""Regret curves are reported at this many evenly spaced decisions."""


@dataclass(frozen=True, slots=True)
class Outcomes:
    """Per-request rewards of each model.

    Attributes:
        models: model keys (the CSV header).
        rewards: float64 ``[requests, len(models)]``, each in [0, 1].
    """

    models: tuple[str, ...]
    rewards: np.ndarray

    def means(self) -> dict[str, float]:
        """Each model's mean reward over the rows."""
        return dict(zip(self.models, self.rewards.mean(axis=0).tolist(), strict=True))


def load_outcomes(path: str | Path) -> Outcomes:
    """Read an outcomes CSV (see the module docstring).

    Raises:
        ConfigError: missing file, no header or no rows, repeated model keys, or a
            value that is not a number in [0, 1].
    """
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        raise ConfigError(f"outcomes file not found: {path}") from None
    header = [h.strip() for h in lines[0].split(",")] if lines else []
    if not header or len(set(header)) != len(header) or not all(header):
        raise ConfigError(f"outcomes {path}: the header must name each model once")
    try:
        rows = [[float(x) for x in line.split(",")] for line in lines[1:] if line.strip()]
        rewards = np.array(rows, dtype=np.float64).reshape(len(rows), len(header))
    except ValueError:
        raise ConfigError(f"outcomes {path}: every row needs one number per model") from None
    if not rows or not np.all((rewards >= 0.0) & (rewards <= 1.0)):
        raise ConfigError(f"outcomes {path}: needs rows of rewards in [0, 1]")
    return Outcomes(tuple(header), rewards)


def write_outcomes(outcomes: Outcomes, path: str | Path) -> Path:
    """Write ``outcomes`` as a CSV (integers stay integers); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "\n".join(",".join(f"{x:g}" for x in row) for row in outcomes.rewards)
    path.write_text(",".join(outcomes.models) + "\n" + body + "\n")
    return path


def bernoulli_outcomes(accuracies: Mapping[str, float], n: int,
                       rng: np.random.Generator) -> Outcomes:
    """``n`` requests on which each model is independently right (reward 1) with its
    accuracy, else wrong (0)."""
    p = np.array(list(accuracies.values()))
    return Outcomes(tuple(accuracies), (rng.random((n, p.size)) < p).astype(np.float64))


@dataclass(slots=True)
class Run:
    """One deployment on one seed's requests.

    Attributes:
        models: the router's models.
        routed: index into ``models`` of the answering model per request, ``[steps]``.
        reward: the answering model's reward per request, ``[steps]``.
        best: the model with the largest total reward on these requests.
        regret: cumulative regret against ``best`` after each request, ``[steps]``.
        promotions: ``{"decision", "champion", "previous", "probability"}`` per
            promotion, ``decision`` being the requests routed before it.
    """

    models: tuple[str, ...]
    routed: np.ndarray
    reward: np.ndarray
    best: str
    regret: np.ndarray
    promotions: list[dict[str, Any]] = field(default_factory=list)

    def traffic_share(self, windows: int = WINDOWS) -> dict[str, list[float]]:
        """Each model's share of the requests of each of ``windows`` equal windows."""
        chunks = np.array_split(self.routed, windows)
        return {m: [float((c == i).mean()) if c.size else 0.0 for c in chunks]
                for i, m in enumerate(self.models)}


def run_router(name: str, spec: RouterSpec, stream: Outcomes, *, seed: int,
               feedback_delay: int = 0) -> Run:
    """Route every request of ``stream`` with a fresh router of ``spec`` and learn each
    decision's rewards ``feedback_delay`` requests later (see the module docstring).

    Raises:
        KeyError: a model of the router that ``stream`` has no column for.
    """
    now = [0.0]
    store = InMemoryStateStore()
    router = build_router(name, spec, rng=random.Random(f"{name}/{seed}"),
                          clock=lambda: now[0], store=store)
    columns = np.array([stream.models.index(m) for m in router.models])
    rewards = stream.rewards[:, columns]
    index = {m: i for i, m in enumerate(router.models)}
    request = InferenceRequest(model_name=name, inputs=[])
    steps = rewards.shape[0]
    routed = np.empty(steps, dtype=np.int64)
    pending: deque[tuple[int, Outcome]] = deque()
    promotions: list[dict[str, Any]] = []
    for t in range(steps):
        now[0] = float(t)
        while pending and pending[0][0] <= t:
            _learn(router, store, pending.popleft()[1], promotions)
        decision = router.route(request)
        routed[t] = index[decision.routed]
        scored = {m: float(rewards[t, index[m]]) for m in (decision.routed, *decision.shadows)}
        pending.append((t + 1 + feedback_delay, Outcome(decision.routed, scored)))
    totals = rewards.sum(axis=0)
    best = int(np.argmax(totals))
    reward = rewards[np.arange(steps), routed]
    regret = np.cumsum(rewards[:, best] - reward)
    return Run(router.models, routed, reward, router.models[best], regret, promotions)


def _learn(router, store: InMemoryStateStore, outcome: Outcome, promotions: list) -> None:
    learning = router.learning(outcome)
    record = store.apply(learning) if learning is not None else None
    if record is not None:
        promotions.append({
            "decision": int(record["time"]), "champion": record["champion"],
            "previous": record["previous"],
            "probability": record.get("evidence", {}).get("probability"),
        })


def _quartiles(values: Sequence[float]) -> dict[str, float] | None:
    if len(values) == 0:
        return None
    p25, p50, p75 = np.percentile(values, [25, 50, 75])
    return {"p25": float(p25), "median": float(p50), "p75": float(p75),
            "mean": float(np.mean(values))}


def _summary(runs: Sequence[Run], truth: Mapping[str, float],
             checkpoints: np.ndarray) -> dict[str, Any]:
    """Per-seed records and their aggregate for one deployment."""
    per_seed, curves, firsts, false_seeds = [], [], [], 0
    for seed, run in enumerate(runs):
        for p in run.promotions:
            p["false"] = truth[p["champion"]] < truth[p["previous"]]
        false_seeds += any(p["false"] for p in run.promotions)
        if run.promotions:
            firsts.append(run.promotions[0]["decision"])
        curve = run.regret[checkpoints - 1]
        curves.append(curve)
        per_seed.append({
            "seed": seed, "best_in_hindsight": run.best, "final_regret": float(run.regret[-1]),
            "mean_reward": float(run.reward.mean()), "regret_curve": curve.tolist(),
            "traffic_share": run.traffic_share(), "promotions": run.promotions,
        })
    stacked = np.array(curves)
    shares = [r.traffic_share() for r in runs]
    models = runs[0].models
    return {
        "models": list(models),
        "best_model": max(models, key=lambda m: truth[m]),
        "aggregate": {
            "final_regret": _quartiles(stacked[:, -1]),
            "regret_curve": {name: np.percentile(stacked, q, axis=0).tolist()
                             for name, q in (("p25", 25), ("median", 50), ("p75", 75))}
            | {"mean": stacked.mean(axis=0).tolist()},
            "traffic_share": {m: np.mean([s[m] for s in shares], axis=0).tolist()
                              for m in models},
            "promotion_rate": sum(bool(r.promotions) for r in runs) / len(runs),
            "false_promotion_rate": false_seeds / len(runs),
            "first_promotion_decision": _quartiles(firsts),
        },
        "runs": per_seed,
    }


def simulate(config: GatewayConfig, table: Outcomes, *, seeds: int, steps: int,
             feedback_delay: int = 0, deployments: Sequence[str] | None = None
             ) -> dict[str, Any]:
    """Run every deployment (or those named) of ``config`` over ``seeds`` draws of
    ``steps`` requests from ``table``; returns the report of ``simulation.json``.

    Raises:
        ConfigError: an unknown deployment, or a router model without an outcome column.
    """
    names = list(deployments or config.deployments)
    for name in names:
        if name not in config.deployments:
            raise ConfigError(f"no deployment {name!r} in the config")
        spec = config.deployments[name].router
        missing = sorted(set(build_router(name, spec).models) - set(table.models))
        if missing:
            raise ConfigError(f"deployment {name!r} routes to {missing}, which the "
                              f"outcomes do not have (columns: {list(table.models)})")
    checkpoints = np.unique(np.linspace(1, steps, min(POINTS, steps)).round().astype(int))
    runs: dict[str, list[Run]] = {name: [] for name in names}
    for seed in range(seeds):
        rows = np.random.default_rng(seed).integers(0, table.rewards.shape[0], steps)
        stream = Outcomes(table.models, table.rewards[rows])
        for name in names:
            runs[name].append(run_router(name, config.deployments[name].router, stream,
                                         seed=seed, feedback_delay=feedback_delay))
    truth = table.means()
    return {
        "outcomes": {"requests": int(table.rewards.shape[0]), "mean_reward": truth},
        "seeds": seeds, "steps": steps, "feedback_delay": feedback_delay,
        "checkpoints": checkpoints.tolist(), "windows": WINDOWS,
        "deployments": {
            name: {"router": config.deployments[name].router.model_dump(mode="json"),
                   **_summary(runs[name], truth, checkpoints)}
            for name in names
        },
    }


def promotion_trials(spec: RouterSpec, accuracies: Mapping[str, float], *, seeds: int,
                     steps: int, feedback_delay: int = 0) -> dict[str, Any]:
    """A champion-challenger ``spec`` on ``seeds`` independent Bernoulli streams of
    ``steps`` requests (model -> accuracy, see :func:`bernoulli_outcomes`).

    Returns:
        ``{"seeds", "steps", "accuracies", "promoted" (seeds with a promotion),
        "false_promotions" (seeds promoting a less accurate model), "false_promotion_rate",
        "first_promotion_decision" (quartiles over promoted seeds, or None),
        "decisions" (first promotion per seed, None when none)}``.
    """
    firsts: list[int | None] = []
    false = 0
    for seed in range(seeds):
        stream = bernoulli_outcomes(accuracies, steps, np.random.default_rng(seed))
        run = run_router("trial", spec, stream, seed=seed, feedback_delay=feedback_delay)
        firsts.append(run.promotions[0]["decision"] if run.promotions else None)
        false += any(accuracies[p["champion"]] < accuracies[p["previous"]]
                     for p in run.promotions)
    promoted = [f for f in firsts if f is not None]
    return {
        "seeds": seeds, "steps": steps, "accuracies": dict(accuracies),
        "promoted": len(promoted), "false_promotions": false,
        "false_promotion_rate": false / seeds,
        "first_promotion_decision": _quartiles(promoted), "decisions": firsts,
    }


def plot(report: Mapping[str, Any], path: str | Path) -> Path:
    """Draw the cumulative regret (median and interquartile band over seeds) and the
    best model's traffic share of each deployment; returns the PNG's path.

    Raises:
        ImportError: matplotlib is not installed (``pip install arbiter[demo]``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))
    x = np.array(report["checkpoints"])
    windows = np.arange(1, report["windows"] + 1) * report["steps"] / report["windows"]
    for name, dep in report["deployments"].items():
        curve = dep["aggregate"]["regret_curve"]
        label = f"{name}: {dep['router']['kind']} over {', '.join(dep['models'])}"
        (line,) = left.plot(x, curve["median"], label=label, linewidth=2)
        left.fill_between(x, curve["p25"], curve["p75"], color=line.get_color(), alpha=0.15)
        share = dep["aggregate"]["traffic_share"][dep["best_model"]]
        right.plot(windows, share, marker="o", markersize=3, color=line.get_color(),
                   label=f"{name}: {dep['best_model']}")
    left.axhline(0, color="grey", linewidth=0.8)
    left.set(title="Cumulative regret vs the best of each deployment's models in "
             "hindsight\n(median over "
             f"{report['seeds']} seeds, band: 25-75 %)", xlabel="decisions",
             ylabel="regret (reward units)")
    right.set(title="Traffic share of the most accurate model\n(mean over seeds, per "
              f"{report['steps'] // report['windows']} decisions)", xlabel="decisions",
              ylabel="share of requests", ylim=(-0.02, 1.02))
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_simulate(config: str | Path, outcomes: str | Path, seeds: int, out_dir: str | Path,
                 *, steps: int = 1000, feedback_delay: int = 0,
                 deployments: Sequence[str] | None = None) -> dict[str, Any]:
    """The ``arbiter simulate`` command: write ``out_dir/simulation.json`` and
    ``out_dir/regret.png`` and print one line per deployment.

    Raises:
        ConfigError: as :func:`load_config`, :func:`load_outcomes` and :func:`simulate`.
    """
    report = simulate(load_config(config), load_outcomes(outcomes), seeds=seeds, steps=steps,
                      feedback_delay=feedback_delay, deployments=deployments)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "simulation.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out / "regret.png")
    for name, dep in report["deployments"].items():
        agg = dep["aggregate"]
        first = agg["first_promotion_decision"]
        print(f"{name} ({dep['router']['kind']}): final regret median "
              f"{agg['final_regret']['median']:.1f}, promotions in "
              f"{agg['promotion_rate']:.0%} of seeds (false {agg['false_promotion_rate']:.0%})"
              + (f", first at decision {first['median']:.0f} (median)" if first else ""))
    return report
