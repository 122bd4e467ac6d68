"""``arbiter replay``: what a candidate router would have earned on the decisions a
deployment logged, estimated off-policy (IPS, SNIPS, doubly robust; see
``gateway.estimators``).

The candidate is a ``router:`` block in the gateway config's own format, built with
the real router class (:func:`routers.build_router`). Its probability of choosing each
arm on each logged decision (:func:`arm_probabilities`) is:

* ``weighted``: the normalised weights, exactly;
* ``shadow``: 1 for the primary;
* ``thompson``: P(arm's posterior draw is the largest), :func:`routers.posterior.prob_max`,
  the function the router computes its own propensities with;
* ``epsilon_greedy``: ``(1 - epsilon) / |G| + epsilon / k`` for arms in the greedy set G,
  ``epsilon / k`` for the others, as the router's ``route`` does;
* ``champion_challenger``: the current champion's and each challenger's share of
  traffic.

Learning candidates start empty and learn from the logged feedback through the same
path as in the gateway (``router.learning(outcome)`` applied by a state store, here a
:class:`routers.state.InMemoryStateStore`), in the order the feedback arrived: each
decision is evaluated with every feedback recorded up to its time. Each feedback
teaches the candidate the rewards the decision recorded (the routed model's, and the
shadows' when a truth scored them), so the candidate learns from the data the logging
policy collected, not from the data it would have collected itself; its
probabilities are those of a candidate running beside the logging policy on the same
feedback. A champion-challenger candidate promotes by its own rule along the way.

Reward model of DR (``reward_model``): ``auto`` uses, on a decision where every arm of
the candidate was scored (champion-challenger decisions with a truth), those recorded
rewards, and elsewhere each arm's mean recorded reward over the log; ``mean`` always
uses the per-arm means. An arm never scored is predicted the mean logged reward.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import TypeAdapter, ValidationError

from gateway.config import ConfigError, StoreSpec
from gateway.decisions import Decision, build_store
from gateway.estimators import doubly_robust, effective_sample_size, ips, snips
from routers import (
    ChampionChallengerRouter,
    EpsilonGreedyRouter,
    InMemoryStateStore,
    Outcome,
    Router,
    RouterSpec,
    ShadowRouter,
    ThompsonRouter,
    WeightedRouter,
    build_router,
)
from routers.posterior import prob_max

__all__ = [
    "CandidateReplay",
    "Logged",
    "arm_probabilities",
    "evaluate",
    "load_policy",
    "logged_arrays",
    "read_decisions",
    "run_replay",
    "store_spec",
]

RewardModel = Literal["auto", "mean"]
MIN_ESS = 100.0
"""Default effective sample size below which the support is reported as too small."""
UNSUPPORTED_MASS = 0.01
"""Share of the candidate's probability on arms the log gave probability 0 above
which a warning is raised."""


def load_policy(path: str | Path) -> RouterSpec:
    """The candidate of a policy file: YAML with one ``router:`` block.

    Raises:
        ConfigError: file missing, not YAML, not exactly ``router:``, or an invalid spec.
    """
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"policy file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"policy file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or set(raw) != {"router"}:
        raise ConfigError(f"policy file {path} must hold one 'router:' block, e.g. "
                          "router: {kind: weighted, weights: {gbm: 100}}")
    try:
        return TypeAdapter(RouterSpec).validate_python(raw["router"])
    except ValidationError as exc:
        raise ConfigError(f"invalid router in policy file {path}: {exc}") from None


def store_spec(target: str) -> StoreSpec:
    """The store a ``--store`` value names: ``postgresql://...`` (or ``postgres://``),
    ``sqlite:///relative/path``, ``sqlite:////absolute/path`` or a plain file path.

    Raises:
        FileNotFoundError: a SQLite file that does not exist (it would be created empty).
    """
    if target.startswith(("postgresql://", "postgres://")):
        return StoreSpec(kind="postgres", dsn=target)
    path = Path(target.removeprefix("sqlite:///"))
    if not path.is_file():
        raise FileNotFoundError(f"decision store not found: {path}")
    return StoreSpec(kind="sqlite", path=path)


async def read_decisions(spec: StoreSpec, deployment: str, since: float | None = None,
                         until: float | None = None) -> list[Decision]:
    """Every decision of ``deployment`` in ``[since, until)`` (Unix seconds), oldest first.

    Raises:
        StoreError: the store cannot be reached, or its schema is newer than this code's.
    """
    store = build_store(spec)
    await store.open([deployment])
    try:
        return await store.list(deployment, since, until)
    finally:
        await store.close()


def arm_probabilities(router: Router) -> dict[str, float]:
    """The router's probability of routing to each of its models now, given its state
    (see the module docstring), in ``router.models`` order.

    Raises:
        TypeError: a router class this function does not know.
    """
    if isinstance(router, WeightedRouter):
        total = sum(router.weights.values())
        return {m: w / total for m, w in router.weights.items()}
    if isinstance(router, ThompsonRouter):
        posteriors = router.posteriors()
        return dict(zip(posteriors, prob_max(list(posteriors.values())), strict=True))
    if isinstance(router, EpsilonGreedyRouter):
        return _epsilon_greedy(router)
    if isinstance(router, ChampionChallengerRouter):
        shares = {c: router.traffic.get(c, 0.0) for c in router.challengers}
        probs = {**shares, router.champion: max(0.0, 1.0 - sum(shares.values()))}
        return {m: probs[m] for m in router.models}
    if isinstance(router, ShadowRouter):
        return {m: float(m == router.primary) for m in router.models}
    raise TypeError(f"no arm probabilities for router kind {router.kind!r}")


def _epsilon_greedy(router: EpsilonGreedyRouter) -> dict[str, float]:
    means = {arm: s.reward_sum / s.n if s.n else math.inf for arm, s in router.stats().items()}
    best = max(means.values())
    greedy = [arm for arm, mean in means.items() if mean == best]
    explore = router.epsilon / len(means)
    exploit = (1.0 - router.epsilon) / len(greedy)
    return {arm: explore + (exploit if arm in greedy else 0.0) for arm in means}


class CandidateReplay:
    """A candidate router replayed over a log: its state learns each feedback through
    ``router.learning`` and an :class:`InMemoryStateStore`, as in the gateway.

    Args:
        deployment: deployment name (the router's state key).
        spec: the candidate's validated router spec.
    """

    def __init__(self, deployment: str, spec: RouterSpec) -> None:
        self.now = 0.0
        self.store = InMemoryStateStore()
        self.router = build_router(deployment, spec, rng=random.Random(0),
                                   clock=lambda: self.now, store=self.store)
        self.promotions: list[dict[str, Any]] = []
        self._probabilities: dict[str, float] | None = None

    def learn(self, routed: str, rewards: Mapping[str, float], at: float) -> None:
        """Learn one feedback received at ``at`` (Unix seconds); rewards of models the
        candidate does not have are left out, as the gateway does."""
        self.now = at
        known = {m: r for m, r in rewards.items() if m in self.router.models}
        learning = self.router.learning(Outcome(routed, known)) if known else None
        if learning is not None:
            self._probabilities = None
            record = self.store.apply(learning)
            if record is not None:
                self.promotions.append(record)

    def probabilities(self) -> dict[str, float]:
        """The candidate's probability of each of its arms now (computed again only
        after its state changed)."""
        if self._probabilities is None:
            self._probabilities = arm_probabilities(self.router)
        return self._probabilities


@dataclass(frozen=True, slots=True)
class Logged:
    """Usable logged decisions as arrays (n decisions, k arms).

    Attributes:
        arms: arm keys: the candidate's models, then other logged models.
        routed: index of the logged arm per decision, int ``[n]``.
        rewards: reward of the logged arm, ``[n]``.
        logging: the decision's propensity, ``[n]``.
        target: the candidate's probability of each arm, ``[n, k]``.
        reward_hat: the DR reward model's prediction of each arm, ``[n, k]``.
        fully_scored: decisions whose reward model is their recorded rewards.
    """

    arms: tuple[str, ...]
    routed: np.ndarray
    rewards: np.ndarray
    logging: np.ndarray
    target: np.ndarray
    reward_hat: np.ndarray
    fully_scored: int


def _usable(d: Decision) -> bool:
    return (d.feedback is not None and bool(d.rewards) and d.routed in d.rewards
            and 0.0 < d.propensity <= 1.0)


def _arm_means(decisions: Sequence[Decision]) -> tuple[dict[str, float], float]:
    """Each arm's mean recorded reward, and the mean reward of the routed arms."""
    sums: dict[str, list[float]] = {}
    for d in decisions:
        for model, reward in (d.rewards or {}).items():
            sums.setdefault(model, []).append(reward)
    overall = float(np.mean([d.rewards[d.routed] for d in decisions])) if decisions else 0.0
    return {m: float(np.mean(v)) for m, v in sums.items()}, overall


def _replayed(decisions: Sequence[Decision], candidate: CandidateReplay) -> list[dict]:
    """The candidate's arm probabilities at each decision, feedback learned in the
    order it arrived (a feedback counts for the decisions made at or after its time)."""
    feedback = sorted(decisions, key=lambda d: (d.feedback or {}).get("time", d.time))
    probs, j = [], 0
    for d in decisions:
        while j < len(feedback) and feedback[j].feedback.get("time", feedback[j].time) <= d.time:
            f = feedback[j]
            candidate.learn(f.routed, f.rewards, f.feedback.get("time", f.time))
            j += 1
        probs.append(candidate.probabilities())
    return probs


def logged_arrays(decisions: Sequence[Decision], candidate: CandidateReplay,
                  reward_model: RewardModel = "auto") -> Logged:
    """The usable decisions of a log (with feedback, a reward for the routed model
    and a propensity in (0, 1]) as :class:`Logged` arrays, oldest first."""
    usable = sorted((d for d in decisions if _usable(d)), key=lambda d: d.time)
    models = candidate.router.models
    others = sorted({m for d in usable for m in (d.routed, *d.rewards)} - set(models))
    arms = (*models, *others)
    index = {a: i for i, a in enumerate(arms)}
    means, overall = _arm_means(usable)
    fallback = np.array([means.get(a, overall) for a in arms])
    target = np.zeros((len(usable), len(arms)))
    reward_hat = np.tile(fallback, (len(usable), 1))
    fully = 0
    for i, (d, probs) in enumerate(zip(usable, _replayed(usable, candidate), strict=True)):
        target[i, : len(models)] = [probs[m] for m in models]
        if reward_model == "auto" and all(m in d.rewards for m in models):
            reward_hat[i, : len(models)] = [d.rewards[m] for m in models]
            fully += 1
    return Logged(
        arms, np.array([index[d.routed] for d in usable], dtype=np.int64),
        np.array([d.rewards[d.routed] for d in usable]),
        np.array([d.propensity for d in usable]), target, reward_hat, fully,
    )


def evaluate(decisions: Sequence[Decision], deployment: str, spec: RouterSpec, *,
             reward_model: RewardModel = "auto", min_ess: float = MIN_ESS) -> dict[str, Any]:
    """Estimate the candidate ``spec``'s mean reward on ``deployment``'s logged decisions.

    Returns:
        The report written to ``replay.json``: ``n`` (decisions used), ``estimators``
        (``ips``, ``snips``, ``dr``: ``{"value", "ci_low", "ci_high"}``, 95 %),
        ``ess``, ``warnings``, and the details ``logged``, ``candidate``,
        ``reward_model``, ``skipped``.
    """
    candidate = CandidateReplay(deployment, spec)
    data = logged_arrays(decisions, candidate, reward_model)
    n = data.routed.size
    rows = np.arange(n)
    pi = data.target[rows, data.routed]
    weights = pi / data.logging if n else np.zeros(0)
    ess = effective_sample_size(weights)
    estimators = {
        "ips": ips(data.rewards, data.logging, pi),
        "snips": snips(data.rewards, data.logging, pi),
        "dr": doubly_robust(data.rewards, data.logging, pi, data.reward_hat[rows, data.routed],
                            (data.target * data.reward_hat).sum(axis=1)),
    }
    report = {
        "deployment": deployment,
        "n": n,
        "estimators": {name: e.as_dict() for name, e in estimators.items()},
        "ess": ess,
        "warnings": _warnings(data, ess, min_ess, n),
        "logged": _logged_summary(data),
        "candidate": {
            "router": spec.model_dump(mode="json"),
            "mean_probability": dict(zip(data.arms, _column_means(data.target), strict=True)),
            "promotions": candidate.promotions,
        },
        "reward_model": {"kind": reward_model, "fully_scored": data.fully_scored},
        "skipped": len(decisions) - n,
    }
    return report


def _column_means(matrix: np.ndarray) -> list[float]:
    return matrix.mean(axis=0).tolist() if matrix.shape[0] else [0.0] * matrix.shape[1]


def _logged_summary(data: Logged) -> dict[str, Any]:
    counts = np.bincount(data.routed, minlength=len(data.arms))
    n = max(int(counts.sum()), 1)
    return {
        "mean_reward": float(data.rewards.mean()) if data.rewards.size else None,
        "routed_share": {a: int(c) / n for a, c in zip(data.arms, counts, strict=True)},
    }


def _warnings(data: Logged, ess: float, min_ess: float, n: int) -> list[str]:
    if n == 0:
        return ["no decision of this deployment has feedback with a propensity: "
                "nothing to estimate"]
    out = []
    if ess < min_ess:
        out.append(f"effective sample size {ess:.1f} is below {min_ess:g}: the logged "
                   "propensities support the candidate on too few decisions, so the "
                   "estimates and intervals are unreliable")
    counts = np.bincount(data.routed, minlength=len(data.arms))
    for i, arm in enumerate(data.arms):
        share = float(data.target[:, i].mean())
        if share > 0.0 and counts[i] == 0:
            out.append(f"the candidate chooses {arm!r} with probability {share:.3f} on "
                       f"average, but no logged decision was routed to {arm!r} (zero "
                       "logged probability): IPS and SNIPS cannot see its rewards")
    certain = data.logging >= 1.0
    rows = np.arange(n)
    elsewhere = float((1.0 - data.target[rows, data.routed])[certain].sum()) / n
    if elsewhere > UNSUPPORTED_MASS:
        out.append(f"{elsewhere:.1%} of the candidate's probability falls on arms the "
                   "logging policy gave probability 0 (decisions logged with propensity 1)")
    return out


def run_replay(store: str, deployment: str, policy: str | Path, out_dir: str | Path, *,
               reward_model: RewardModel = "auto", min_ess: float = MIN_ESS,
               since: float | None = None, until: float | None = None) -> dict[str, Any]:
    """The ``arbiter replay`` command: read the log, evaluate, write
    ``out_dir/replay.json``, print the estimates to stdout and the warnings to stderr.

    Raises:
        ConfigError: a bad policy file.
        FileNotFoundError: a SQLite store that does not exist.
        StoreError: the store cannot be read.
    """
    spec = load_policy(policy)
    decisions = asyncio.run(read_decisions(store_spec(store), deployment, since, until))
    report = evaluate(decisions, deployment, spec, reward_model=reward_model, min_ess=min_ess)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "replay.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{deployment}: {report['n']} decisions with feedback, ESS {report['ess']:.1f}")
    for name, e in report["estimators"].items():
        print(f"  {name:5s} {_fmt(e['value'])}  95% CI [{_fmt(e['ci_low'])}, "
              f"{_fmt(e['ci_high'])}]")
    for warning in report["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    return report


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"
