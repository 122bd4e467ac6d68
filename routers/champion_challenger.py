"""Champion / challenger: evaluate new models on live traffic, promote the better one.

The champion answers; every challenger sees every request as a shadow, so each
decision records every model's output and a ground-truth feedback scores all of them
on the same requests. A challenger may also be given a share of live traffic (then it
answers that share and the champion is a shadow on those requests).

Each model's success probability has a Beta posterior (see ``routers.posterior``). A
challenger is promoted automatically when P(p_challenger > p_champion) reaches a
threshold with enough scored decisions on each side - the "probability to beat the
control" rule of Bayesian A/B testing (Scott, "Multi-armed bandit experiments in the
online service economy", ASMBI 2015; Chapelle & Li 2011 for the Beta-Bernoulli model).

An optional guard (the gateway's fairness guardrail) may refuse a promotion the rule
calls for; the refusal, with the guard's evidence, is kept in :attr:`refusals` and
logged, and the next best challenger is considered.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from protos.protocol import InferenceRequest
from routers.base import Clock, NoHealthyArmError, Outcome, RouteDecision, Router
from routers.posterior import (
    BetaPosterior,
    checked_rewards,
    prob_greater,
    prob_greater_upper_bound,
)
from routers.state import (
    CHAMPION,
    PROMOTIONS,
    ArmStats,
    InMemoryStateStore,
    Learning,
    StateStore,
)

__all__ = ["PromotionGuard", "PromotionRule", "ChampionChallengerRouter"]

log = logging.getLogger("arbiter.routers")

PromotionGuard = Callable[[str, str], Mapping[str, Any]]
"""Given (champion, challenger), a verdict ``{"allowed": bool, ...evidence}``; called
where the promotion rule runs (possibly the store's writer thread), so it must only read
state that is safe to read there."""

_EMPTY = ArmStats()
_MEMO_SIZE = 256


@dataclass(frozen=True, slots=True)
class PromotionRule:
    """When a challenger replaces the champion automatically.

    Attributes:
        auto: promote automatically (else only :meth:`ChampionChallengerRouter.promote`).
        min_samples: scored decisions needed on EACH side (count, >= 1).
        probability: threshold on P(p_challenger > p_champion), in (0.5, 1).
        check_every: evaluate the rule once per this many feedbacks (count, >= 1).
    """

    auto: bool = False
    min_samples: int = 200
    probability: float = 0.975
    check_every: int = 1

    def __post_init__(self) -> None:
        if self.min_samples < 1 or self.check_every < 1:
            raise ValueError("min_samples and check_every must be >= 1")
        if not 0.5 < self.probability < 1.0:
            raise ValueError(f"probability must be in (0.5, 1), got {self.probability}")


class ChampionChallengerRouter(Router):
    """The champion answers, challengers shadow it, and the better model is promoted.

    The current champion is kept in the state store (value ``"champion"``) so routers
    of several processes sharing a store agree on it and it survives a restart: a
    stored champion that is one of this router's models wins over ``champion``. The
    promotion log is the store value ``"promotions"``.

    Args:
        name: deployment name; the state-store key.
        champion: initial champion model key.
        challengers: other model keys, unique, not the champion.
        traffic: challenger -> share of live traffic in [0, 1] (sum <= 1). Shares
            apply to whichever models are challengers at the time: a promoted model's
            share is ignored while it is champion.
        rule: automatic promotion rule.
        fallback: the model that stands in for a champion that is down (a
            challenger); None, or itself down or the champion: the healthy challenger
            with the best posterior mean.
        alpha0: Beta prior alpha (> 0) of every model.
        beta0: Beta prior beta (> 0) of every model.
        store: where counts, the champion and promotions live (default: in memory).
        rng: random source (used only when some traffic share is in (0, 1)).
        clock: time source in seconds, stamped on promotions.
        guard: consulted before an automatic promotion; a verdict that does not allow
            it refuses the promotion (see :attr:`refusals`); None: none.

    Raises:
        ValueError: repeated models, the champion among the challengers, a traffic
            key that is not a challenger, shares outside [0, 1] or summing above 1,
            a fallback that is not a challenger, or a non-positive prior parameter.
    """

    kind: ClassVar[str] = "champion_challenger"

    def __init__(
        self,
        name: str,
        champion: str,
        challengers: Sequence[str],
        *,
        traffic: Mapping[str, float] | None = None,
        rule: PromotionRule | None = None,
        fallback: str | None = None,
        alpha0: float = 1.0,
        beta0: float = 1.0,
        store: StateStore | None = None,
        rng: random.Random | None = None,
        clock: Clock = time.time,
        guard: PromotionGuard | None = None,
    ) -> None:
        super().__init__(
            name, rng=rng, clock=clock,
            store=store if store is not None else InMemoryStateStore(),
        )
        self.guard = guard
        self.refusals: dict[str, dict[str, Any]] = {}
        """Challenger -> the latest refusal of its promotion by the guard: ``{"time",
        "champion", "challenger", "probability", "evidence"}`` (this process's)."""
        self.store: StateStore
        self._models = (champion, *challengers)
        self.traffic = {m: float(f) for m, f in (traffic or {}).items()}
        _check_models(self._models, self.traffic)
        if not (alpha0 > 0 and beta0 > 0):
            raise ValueError(f"prior alpha and beta must be > 0, got {alpha0}, {beta0}")
        self.alpha0, self.beta0 = float(alpha0), float(beta0)
        self.rule = rule if rule is not None else PromotionRule()
        if fallback is not None and fallback not in self._models[1:]:
            raise ValueError(f"fallback {fallback!r} is not a challenger")
        self.fallback = fallback
        self.initial_champion = champion
        self._model_set = frozenset(self._models)
        self._tables = {m: self._route_table(m) for m in self._models}
        self._degraded: dict[tuple[str, str, frozenset[str]], tuple] = {}
        self._feedbacks = 0
        self._memo: dict[tuple[BetaPosterior, BetaPosterior], float] = {}

    @property
    def models(self) -> tuple[str, ...]:
        """Every model: the initial champion, then the challengers in config order."""
        return self._models

    @property
    def champion(self) -> str:
        """The current champion (read from the store; the initial champion until a
        promotion is stored)."""
        return self._champion_of(self.store.get_value(self.name, CHAMPION))

    def _champion_of(self, stored: Any) -> str:
        return stored if stored in self._tables else self.initial_champion

    @property
    def primary(self) -> str:
        """The current champion."""
        return self.champion

    @property
    def challengers(self) -> tuple[str, ...]:
        """Every model but the current champion, in config order."""
        champion = self.champion
        return tuple(m for m in self._models if m != champion)

    @property
    def promotions(self) -> list[dict[str, Any]]:
        """The promotion log, oldest first (a copy); see :meth:`promote`."""
        return list(self.store.get_value(self.name, PROMOTIONS, []))

    def route(
        self, request: InferenceRequest, healthy: frozenset[str] | None = None
    ) -> RouteDecision:
        """The champion answers and every challenger shadows, except on the shares of
        traffic given to challengers, where that challenger answers instead. The
        propensity is exact: a challenger's share, or 1 minus their sum.

        With ``healthy``, unhealthy models neither answer nor shadow, and their
        shares go to the champion; a champion that is down is replaced by a stand-in
        (:attr:`fallback`, else the healthy challenger with the best posterior mean),
        whose decisions carry ``fallback = (champion, reason)``.

        Raises:
            NoHealthyArmError: no model is healthy.
        """
        champion = self.champion
        if healthy is None or self._model_set <= healthy:
            default, shares = self._tables[champion]
        else:
            default, shares = self._degraded_table(champion, healthy)
        if not shares:
            return default
        u = self.rng.random()
        for threshold, decision in shares:
            if u < threshold:
                return decision
        return default

    def _degraded_table(self, champion: str, healthy: frozenset[str]) -> tuple:
        """:meth:`_route_table` over the healthy models, the champion or its stand-in
        answering by default (memoised per stand-in and healthy set; the stand-in is
        chosen afresh each time, as posteriors move)."""
        available = healthy & self._model_set
        stand_in = champion if champion in available else self._stand_in(champion, available)
        key = (champion, stand_in, available)
        table = self._degraded.get(key)
        if table is None:
            if len(self._degraded) >= _MEMO_SIZE:
                self._degraded.clear()
            default, shares = self._route_table(stand_in, available)
            if stand_in != champion:
                reason = f"champion {champion!r} is unhealthy"
                default = RouteDecision(default.routed, default.shadows, default.propensity,
                                        fallback=(champion, reason))
            table = self._degraded[key] = (default, shares)
        return table

    def _stand_in(self, champion: str, available: frozenset[str]) -> str:
        """The configured fallback when healthy, else the healthy challenger with the
        best posterior mean (config order breaks ties).

        Raises:
            NoHealthyArmError: no challenger is healthy.
        """
        if self.fallback is not None and self.fallback != champion and self.fallback in available:
            return self.fallback
        candidates = tuple(m for m in self._models if m != champion and m in available)
        if not candidates:
            raise NoHealthyArmError(self.name, self._models)
        stats = self.stats()
        means = {m: BetaPosterior.from_stats(stats[m], self.alpha0, self.beta0).mean
                 for m in candidates}
        return max(candidates, key=lambda m: means[m])

    def learning(self, outcome: Outcome) -> Learning | None:
        """Score every model in ``outcome.rewards``; with automatic promotion, the rule
        is evaluated (every ``check_every`` feedbacks) on the counts that result, in
        the same atomic step.

        Raises:
            ValueError: a reward outside [0, 1] or for an unknown model.
        """
        rewards = checked_rewards(outcome.rewards, self._tables)
        if not rewards:
            return None
        self._feedbacks += 1
        check = self.rule.auto and self._feedbacks % self.rule.check_every == 0
        return Learning(self.name, rewards, self.promotion if check else None)

    def maybe_promote(self) -> dict[str, Any] | None:
        """Apply the promotion rule now to the stored counts; return the promotion
        record, or ``None`` (also when another process promoted first)."""
        stored = self.store.get_value(self.name, CHAMPION)
        record = self.promotion(self.store.arm_stats(self.name), stored)
        if record is None or not self.store.promote(self.name, stored, record):
            return None
        return record

    def promotion(self, counts: Mapping[str, ArmStats], stored: Any) -> dict[str, Any] | None:
        """The promotion record the rule calls for, given per-model counts and the
        stored champion (None: the initial one), or ``None``. Writes nothing to the
        store; a refusal by the guard is kept in :attr:`refusals` and logged.

        Among challengers with at least ``min_samples`` scored decisions (the champion
        needing as many) whose P(p_challenger > p_champion) reaches the threshold, the
        one with the largest probability that the guard (if any) allows is promoted. The
        exact probability (about 0.2-1 ms of quadrature) is computed only for challengers
        whose cheap upper bound (:func:`~routers.posterior.prob_greater_upper_bound`, a
        few microseconds) reaches the threshold, so clearly worse challengers cost almost
        nothing.
        """
        stats = {m: counts.get(m, _EMPTY) for m in self._models}
        champion = self._champion_of(stored)
        if stats[champion].n < self.rule.min_samples:
            return None
        ahead: list[tuple[float, str, dict[str, Any]]] = []
        for challenger in (m for m in self._models if m != champion):
            if stats[challenger].n < self.rule.min_samples or not self._may_beat(
                stats, champion, challenger
            ):
                continue
            evidence = self._evidence(stats, champion, challenger)
            if evidence["probability"] >= self.rule.probability:
                ahead.append((evidence["probability"], challenger, evidence))
        for p, challenger, evidence in sorted(ahead, key=lambda a: -a[0]):
            if self.guard is not None:
                verdict = dict(self.guard(champion, challenger))
                if not verdict.get("allowed", False):
                    self._refused(champion, challenger, p, verdict)
                    continue
                evidence = {**evidence, "guard": verdict}
                self.refusals = {k: v for k, v in self.refusals.items() if k != challenger}
            return self._record(challenger, champion, "auto", evidence)
        return None

    def _refused(self, champion: str, challenger: str, probability: float,
                 verdict: dict[str, Any]) -> None:
        """Keep (and log, when new) the guard's refusal of a promotion."""
        earlier = self.refusals.get(challenger)
        if earlier is None or earlier["champion"] != champion or \
                earlier["evidence"].get("reason") != verdict.get("reason"):
            log.warning("%s: promotion of %s over %s refused by the guard (P(better) = %.3f): "
                        "%s", self.name, challenger, champion, probability, verdict)
        self.refusals = {**self.refusals, challenger: {
            "time": self.clock(), "champion": champion, "challenger": challenger,
            "probability": probability, "evidence": verdict}}

    def promote(
        self, model: str, reason: str = "manual", evidence: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Make ``model`` the champion now; the old champion becomes a challenger.

        Appends the record of :meth:`promotion_record` to :attr:`promotions`, by a
        compare-and-set on the champion this router read.

        Returns:
            The promotion record.

        Raises:
            ValueError: ``model`` is not a challenger of this router, or another
                process changed the champion meanwhile.
        """
        stored = self.store.get_value(self.name, CHAMPION)
        record = self.promotion_record(model, reason, evidence)
        if not self.store.promote(self.name, stored, record):
            raise ValueError(f"the champion of {self.name!r} changed meanwhile; try again")
        return record

    def promotion_record(
        self, model: str, reason: str = "manual", evidence: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """``{"time", "champion", "previous", "reason", "evidence"}`` for promoting
        ``model`` over the current champion; ``time`` is the clock's seconds,
        ``evidence`` defaults to :meth:`evidence` of ``model`` (both posteriors, counts
        and the probability). Pure: writes nothing.

        Raises:
            ValueError: ``model`` is not a challenger of this router.
        """
        previous = self.champion
        if model == previous or model not in self._tables:
            raise ValueError(f"{model!r} is not a challenger of {self.name!r}")
        if evidence is None:
            evidence = self.evidence(model)
        return self._record(model, previous, reason, evidence)

    def _record(
        self, model: str, previous: str, reason: str, evidence: Mapping[str, Any]
    ) -> dict[str, Any]:
        return {"time": self.clock(), "champion": model, "previous": previous,
                "reason": reason, "evidence": dict(evidence)}

    def evidence(self, challenger: str) -> dict[str, Any]:
        """Both posteriors, counts and P(p_challenger > p_champion) for ``challenger``.

        Raises:
            ValueError: ``challenger`` is not a challenger of this router.
        """
        if challenger not in self.challengers:
            raise ValueError(f"{challenger!r} is not a challenger of {self.name!r}")
        return self._evidence(self.stats(), self.champion, challenger)

    def stats(self) -> dict[str, ArmStats]:
        """Current stats of every model (zeros for models never scored)."""
        stored = self.store.arm_stats(self.name)
        return {m: stored.get(m, _EMPTY) for m in self._models}

    def snapshot(self) -> dict[str, Any]:
        """Kind, models, champion, challengers, traffic, rule, prior, per-model
        posteriors (with P(beats champion) for challengers) and the promotions."""
        stats, champion = self.stats(), self.champion
        arms = {m: self._side(stats[m]) for m in self._models}
        for challenger in self.challengers:
            evidence = self._evidence(stats, champion, challenger)
            arms[challenger]["p_beats_champion"] = evidence["probability"]
        return {
            **super().snapshot(),
            "champion": champion,
            "challengers": list(self.challengers),
            "traffic": dict(self.traffic),
            "promotion": asdict(self.rule),
            "prior": {"alpha": self.alpha0, "beta": self.beta0},
            "arms": arms,
            "promotions": self.promotions,
            "refusals": list(self.refusals.values()),
        }

    def _evidence(
        self, stats: Mapping[str, ArmStats], champion: str, challenger: str
    ) -> dict[str, Any]:
        champ = BetaPosterior.from_stats(stats[champion], self.alpha0, self.beta0)
        chall = BetaPosterior.from_stats(stats[challenger], self.alpha0, self.beta0)
        return {
            "champion": {"model": champion, **self._side(stats[champion])},
            "challenger": {"model": challenger, **self._side(stats[challenger])},
            "probability": self._prob_greater(chall, champ),
        }

    def _prob_greater(self, chall: BetaPosterior, champ: BetaPosterior) -> float:
        """:func:`prob_greater`, memoised on the two posteriors (the gateway reads the
        snapshot right after each feedback, with the posteriors the rule just saw)."""
        key = (chall, champ)
        p = self._memo.get(key)
        if p is None:
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            p = self._memo[key] = prob_greater(chall, champ)
        return p

    def _may_beat(self, stats: Mapping[str, ArmStats], champion: str, challenger: str) -> bool:
        """False when a cheap upper bound rules the promotion out (skips quadrature)."""
        champ = BetaPosterior.from_stats(stats[champion], self.alpha0, self.beta0)
        chall = BetaPosterior.from_stats(stats[challenger], self.alpha0, self.beta0)
        return prob_greater_upper_bound(chall, champ) >= self.rule.probability

    def _side(self, stats: ArmStats) -> dict[str, Any]:
        post = BetaPosterior.from_stats(stats, self.alpha0, self.beta0)
        return {"n": stats.n, "reward_sum": stats.reward_sum, **post.as_dict()}

    def _route_table(
        self, champion: str, available: frozenset[str] | None = None
    ) -> tuple[RouteDecision, tuple[tuple[float, RouteDecision], ...]]:
        """Decisions while ``champion`` answers by default: the default and, per
        challenger with a positive traffic share, (cumulative share, decision); over
        the ``available`` models only (None: all)."""
        models = self._models if available is None else tuple(
            m for m in self._models if m in available)
        others = tuple(m for m in models if m != champion)
        shares, cumulative = [], 0.0
        for challenger in others:
            share = self.traffic.get(challenger, 0.0)
            if share > 0.0:
                cumulative += share
                shadows = tuple(m for m in models if m != challenger)
                shares.append(
                    (cumulative, RouteDecision(challenger, shadows, propensity=share))
                )
        default = RouteDecision(champion, others, propensity=max(0.0, 1.0 - cumulative))
        return default, tuple(shares)


def _check_models(models: tuple[str, ...], traffic: Mapping[str, float]) -> None:
    """Validate the model list and traffic shares (see the class's Raises)."""
    if len(set(models)) != len(models) or len(models) < 2:
        raise ValueError(f"champion and challengers must be distinct, got {list(models)}")
    unknown = sorted(set(traffic) - set(models[1:]))
    if unknown:
        raise ValueError(f"traffic names models that are not challengers: {unknown}")
    if any(not 0.0 <= f <= 1.0 for f in traffic.values()) or sum(traffic.values()) > 1 + 1e-9:
        raise ValueError(f"traffic shares must be in [0, 1] and sum to <= 1, got {traffic}")
