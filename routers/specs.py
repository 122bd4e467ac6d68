"""Config schemas of the routing policies (pydantic v2).

The gateway's deployment file embeds :data:`RouterSpec` under
``deployments.<name>.router``; ``kind`` selects the policy::

    credit:        {kind: thompson, arms: [lr, gbm, mlp], prior: {alpha: 1, beta: 1}}
    credit-eg:     {kind: epsilon_greedy, arms: [lr, gbm], epsilon: 0.1}
    credit-cc:     {kind: champion_challenger, champion: lr, challengers: [gbm, mlp],
                    traffic: {gbm: 0.0},
                    promotion: {auto: true, min_samples: 200, probability: 0.975}}
    credit-shadow: {kind: shadow, primary: lr,
                    shadows: [{model: gbm, fraction: 1.0}, {model: mlp, fraction: 0.25}]}
    credit-ab:     {kind: weighted, weights: {lr: 100, gbm: 0}}

Specs are frozen and reject unknown fields. Validation errors are
``pydantic.ValidationError`` (a ``ValueError``).
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

__all__ = [
    "ModelKey",
    "Fraction",
    "BetaPriorSpec",
    "ThompsonSpec",
    "EpsilonGreedySpec",
    "WeightedSpec",
    "ShadowTargetSpec",
    "ShadowSpec",
    "PromotionSpec",
    "ChampionChallengerSpec",
    "RouterSpec",
]

ModelKey = Annotated[
    str,
    StringConstraints(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$"),
]
"""A model key as used in the deployment's ``models`` map (letters, digits, ``_.:-``)."""

Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
"""A share of requests in [0, 1]."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _unique(keys: list[str], what: str) -> None:
    dupes = sorted(k for k, count in Counter(keys).items() if count > 1)
    if dupes:
        raise ValueError(f"{what} must be unique; repeated: {', '.join(dupes)}")


class BetaPriorSpec(_Spec):
    """Beta(alpha, beta) prior on each arm's success probability."""

    alpha: float = Field(
        default=1.0,
        gt=0,
        allow_inf_nan=False,
        description="Prior pseudo-successes (> 0). 1 with beta 1 is the uniform prior.",
    )
    beta: float = Field(
        default=1.0, gt=0, allow_inf_nan=False, description="Prior pseudo-failures (> 0)."
    )


class ThompsonSpec(_Spec):
    """Beta-Bernoulli Thompson sampling over ``arms`` (see ``routers.bandit``)."""

    kind: Literal["thompson"] = Field(description="Policy selector: Thompson sampling.")
    arms: list[ModelKey] = Field(
        min_length=1, description="Model keys to choose among; unique. The first is primary."
    )
    prior: BetaPriorSpec = Field(
        default=BetaPriorSpec(), description="Beta prior shared by every arm."
    )

    @model_validator(mode="after")
    def _check(self) -> ThompsonSpec:
        _unique(self.arms, "arms")
        return self


class EpsilonGreedySpec(_Spec):
    """Epsilon-greedy over ``arms`` (see ``routers.bandit``)."""

    kind: Literal["epsilon_greedy"] = Field(description="Policy selector: epsilon-greedy.")
    arms: list[ModelKey] = Field(
        min_length=1, description="Model keys to choose among; unique. The first is primary."
    )
    epsilon: Fraction = Field(
        default=0.1,
        description="Probability in [0, 1] of exploring: picking an arm uniformly among "
        "all arms instead of the best empirical mean.",
    )

    @model_validator(mode="after")
    def _check(self) -> EpsilonGreedySpec:
        _unique(self.arms, "arms")
        return self


class WeightedSpec(_Spec):
    """Fixed random split (A/B test, canary), like Seldon ``RANDOM_ABTEST`` or a KServe
    canary: each request goes to an arm with probability weight / sum(weights)."""

    kind: Literal["weighted"] = Field(description="Policy selector: fixed weighted split.")
    weights: dict[ModelKey, Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(
        min_length=1,
        description="Model key -> relative weight (>= 0, any scale; sum > 0). A weight of "
        "0 never receives traffic. The first key is primary.",
    )

    @model_validator(mode="after")
    def _check(self) -> WeightedSpec:
        if sum(self.weights.values()) <= 0:
            raise ValueError("weights must sum to more than 0")
        return self


class ShadowTargetSpec(_Spec):
    """One shadow model and how often it is mirrored."""

    model: ModelKey = Field(description="Model key that receives a copy of requests.")
    fraction: Fraction = Field(
        default=1.0,
        description="Share of requests mirrored to this model, in [0, 1], sampled "
        "independently per request and per shadow (1 = always, 0 = never).",
    )


class ShadowSpec(_Spec):
    """The primary answers; shadows see copies whose outputs are only recorded."""

    kind: Literal["shadow"] = Field(description="Policy selector: primary plus shadows.")
    primary: ModelKey = Field(description="Model key that answers every request.")
    shadows: list[ShadowTargetSpec] = Field(
        default_factory=list,
        description="Models mirrored in the background; unique, not the primary.",
    )

    @model_validator(mode="after")
    def _check(self) -> ShadowSpec:
        models = [s.model for s in self.shadows]
        _unique(models, "shadow models")
        if self.primary in models:
            raise ValueError(f"primary {self.primary!r} cannot also be a shadow")
        return self


class PromotionSpec(_Spec):
    """When a challenger automatically replaces the champion."""

    auto: bool = Field(
        default=False, description="Promote automatically; when false only manual promotion."
    )
    min_samples: int = Field(
        default=200,
        ge=1,
        description="Scored decisions needed on EACH side (champion and "
        "challenger) before a promotion is considered (count).",
    )
    probability: float = Field(
        default=0.975,
        gt=0.5,
        lt=1.0,
        description="Promote when P(p_challenger > p_champion) under the Beta posteriors "
        "reaches this value; in (0.5, 1).",
    )
    check_every: int = Field(
        default=1,
        ge=1,
        description="Evaluate the promotion rule once per this many feedbacks "
        "received by this process (count); raise it to cut CPU at high feedback rates.",
    )


class ChampionChallengerSpec(_Spec):
    """The champion answers; challengers are shadows (or get a share of live traffic)
    and replace the champion when clearly better (see ``routers.champion_challenger``)."""

    kind: Literal["champion_challenger"] = Field(
        description="Policy selector: champion / challenger."
    )
    champion: ModelKey = Field(description="Initial champion: the model that answers.")
    challengers: list[ModelKey] = Field(
        min_length=1,
        description="Models evaluated against the champion; unique, not the champion.",
    )
    traffic: dict[ModelKey, Fraction] = Field(
        default_factory=dict,
        description="Challenger -> share of live traffic it answers, in [0, 1] (the "
        "champion is then a shadow). Keys must be challengers; shares sum to <= 1. "
        "Challengers not listed answer no live traffic.",
    )
    promotion: PromotionSpec = Field(
        default=PromotionSpec(), description="Automatic promotion rule."
    )
    prior: BetaPriorSpec = Field(
        default=BetaPriorSpec(),
        description="Beta prior on every model's success probability, for promotion.",
    )
    fallback: ModelKey | None = Field(
        default=None,
        description="Challenger that answers while the champion is down (its circuit "
        "breaker open); None, or itself down: the healthy challenger with the best "
        "posterior mean. Each such decision records fallback {from, reason}.",
    )

    @model_validator(mode="after")
    def _check(self) -> ChampionChallengerSpec:
        _unique(self.challengers, "challengers")
        if self.champion in self.challengers:
            raise ValueError(f"champion {self.champion!r} cannot also be a challenger")
        if self.fallback is not None and self.fallback not in self.challengers:
            raise ValueError(f"fallback {self.fallback!r} is not a challenger")
        unknown = sorted(set(self.traffic) - set(self.challengers))
        if unknown:
            raise ValueError(f"traffic names models that are not challengers: {unknown}")
        if sum(self.traffic.values()) > 1.0 + 1e-9:
            raise ValueError("traffic shares must sum to at most 1")
        return self


RouterSpec = Annotated[
    ThompsonSpec | EpsilonGreedySpec | WeightedSpec | ShadowSpec | ChampionChallengerSpec,
    Field(discriminator="kind"),
]
"""Any router spec; ``kind`` selects the class. Parse one with
``pydantic.TypeAdapter(RouterSpec).validate_python(data)``."""
