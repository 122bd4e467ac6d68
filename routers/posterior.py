"""Beta-Bernoulli posteriors and the probability that one arm beats another.

With a Beta(alpha0, beta0) prior on an arm's success probability p and rewards
r_1..r_n in [0, 1] (fractional rewards count as partial successes), the posterior is
Beta(alpha0 + sum r, beta0 + n - sum r) (Chapelle & Li, "An Empirical Evaluation of
Thompson Sampling", NIPS 2011; Agrawal & Goyal, "Analysis of Thompson Sampling for the
Multi-armed Bandit Problem", COLT 2012, Algorithm 2 for fractional rewards).
"""

from __future__ import annotations

import math
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import integrate, special

from routers.state import ArmStats

__all__ = [
    "BetaPosterior",
    "check_reward",
    "checked_rewards",
    "prob_greater",
    "prob_greater_upper_bound",
    "prob_max",
]


@dataclass(frozen=True, slots=True)
class BetaPosterior:
    """A Beta(alpha, beta) distribution over a success probability.

    Attributes:
        alpha: first shape parameter (> 0): prior alpha plus summed rewards.
        beta: second shape parameter (> 0): prior beta plus summed (1 - reward).
    """

    alpha: float
    beta: float

    @classmethod
    def from_stats(cls, stats: ArmStats, alpha0: float, beta0: float) -> BetaPosterior:
        """The posterior after ``stats`` under a Beta(alpha0, beta0) prior."""
        failures = max(stats.n - stats.reward_sum, 0.0)  # guard float rounding
        return cls(alpha0 + stats.reward_sum, beta0 + failures)

    @property
    def mean(self) -> float:
        """Posterior mean alpha / (alpha + beta)."""
        return self.alpha / (self.alpha + self.beta)

    def as_dict(self) -> dict[str, float]:
        """JSON-able ``{"alpha", "beta", "mean"}``."""
        return {"alpha": self.alpha, "beta": self.beta, "mean": self.mean}


def check_reward(model: str, reward: float) -> float:
    """Return ``reward`` as a float if it lies in [0, 1].

    Raises:
        ValueError: the reward is NaN or outside [0, 1].
    """
    value = float(reward)
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"reward for {model!r} must be in [0, 1], got {reward!r}")
    return value


def checked_rewards(rewards: Mapping[str, float], models: Container[str]) -> dict[str, float]:
    """Validate an outcome's rewards (model key -> reward) before any is stored.

    Raises:
        ValueError: a key is not one of ``models``, or a reward is outside [0, 1].
    """
    checked = {}
    for model, reward in rewards.items():
        if model not in models:
            raise ValueError(f"reward for unknown model {model!r}")
        checked[model] = check_reward(model, reward)
    return checked


_TAIL = 1e-13


def prob_greater(x: BetaPosterior, y: BetaPosterior) -> float:
    """P(X > Y) for independent X ~ Beta(x.alpha, x.beta), Y ~ Beta(y.alpha, y.beta).

    Deterministic numerical integration: with D the more concentrated of the two (the
    smaller variance) and O the other, P(X > Y) is

    * ``integral of f_X(t) F_Y(t) dt`` when D is X, or
    * ``1 - integral of f_Y(t) F_X(t) dt`` when D is Y,

    where f is a density and F the CDF (the regularised incomplete beta function,
    ``scipy.special.betainc``). Integrating against the narrower density keeps the
    other factor smooth over the range, so adaptive quadrature
    (``scipy.integrate.quad``, QUADPACK QAGS) is accurate even for a posterior with
    hundreds of thousands of samples against a flat one. The range is D's central
    1 - 2e-13 mass, with a break point at D's mean. Accuracy is about 1e-9 absolute
    for shapes >= 1 (tested against Monte Carlo and the symmetry
    P(X > Y) = 1 - P(Y > X)); a few microseconds of CPU per QUADPACK node, typically
    0.2-1 ms per call.

    Args:
        x: posterior of the arm that should be larger (e.g. the challenger).
        y: posterior of the other arm (e.g. the champion).

    Returns:
        A probability in [0, 1].
    """
    if _variance(x) <= _variance(y):
        value = _expect_cdf(x, y)
    else:
        value = 1.0 - _expect_cdf(y, x)
    return min(1.0, max(0.0, value))


def prob_greater_upper_bound(x: BetaPosterior, y: BetaPosterior) -> float:
    """A cheap upper bound on P(X > Y) (two vectorised incomplete-beta calls).

    For any t, X > Y implies X > t or Y < t, so P(X > Y) <= P(X > t) + P(Y < t); the
    bound is the minimum over 9 values of t spread between the two means. Use it to
    skip :func:`prob_greater` when the bound is already below a threshold.

    Returns:
        A value in [0, 1] that is >= P(X > Y).
    """
    t = np.linspace(min(x.mean, y.mean), max(x.mean, y.mean), 9)
    bound = 1.0 - special.betainc(x.alpha, x.beta, t) + special.betainc(y.alpha, y.beta, t)
    return float(min(1.0, bound.min()))


def _variance(d: BetaPosterior) -> float:
    total = d.alpha + d.beta
    return d.alpha * d.beta / (total * total * (total + 1.0))


def _expect_cdf(d: BetaPosterior, o: BetaPosterior) -> float:
    """E[F_O(D)] = integral of f_D(t) F_O(t) dt = P(O < D)."""
    lo = float(special.betaincinv(d.alpha, d.beta, _TAIL))
    hi = float(special.betaincinv(d.alpha, d.beta, 1.0 - _TAIL))
    log_norm = float(special.betaln(d.alpha, d.beta))
    a1, b1, betainc = d.alpha - 1.0, d.beta - 1.0, special.betainc

    def integrand(t: float) -> float:
        if t <= 0.0 or t >= 1.0:
            return 0.0
        log_pdf = a1 * math.log(t) + b1 * math.log1p(-t) - log_norm
        return math.exp(log_pdf) * float(betainc(o.alpha, o.beta, t))

    points = [d.mean] if lo < d.mean < hi else None
    # full_output=1: QUADPACK reports trouble in the returned message, not as a warning.
    result = integrate.quad(
        integrand,
        lo,
        hi,
        points=points,
        epsabs=1e-11,
        epsrel=1e-10,
        limit=200,
        full_output=1,
    )
    return float(result[0])


_GRID_PER_ARM = 256
_Z = 12.0
_UNIFORM = np.linspace(0.0, 1.0, 1025)


def prob_max(posteriors: Sequence[BetaPosterior]) -> list[float]:
    """P(arm i's draw is the largest) for independent Beta posteriors: the probability
    with which Thompson sampling chooses each arm (its propensity).

    ``P_i = integral of prod_{j != i} F_j(t) dF_i(t)`` (F a CDF), as a Riemann-Stieltjes
    sum with the exact mass of arm i in each interval (so densities that are infinite
    at 0 or 1, shapes below 1, cost no accuracy) and the product at the interval's
    midpoint by the trapezoid rule, on the union of a uniform grid over [0, 1] and,
    per arm, 256 points spread over its mean +- 12 standard deviations, so each density
    is resolved where its mass is, however concentrated. The results are normalised to
    sum to 1. Absolute error about 1e-3 per arm for shapes >= 0.5 and 1e-2 for
    shapes near 0.1 (tested against 10^6 Monte Carlo draws, from a flat prior to
    10^5 samples per arm); 0.2 to 1 ms for 3 arms. Thompson routers compute it once
    per change of the posteriors, not per request.

    Source: the probability-matching property of Thompson sampling (Chapelle & Li,
    "An Empirical Evaluation of Thompson Sampling", NIPS 2011, section 2).

    Args:
        posteriors: one posterior per arm (k >= 1).

    Returns:
        k probabilities in [0, 1] summing to 1, in the order given.
    """
    k = len(posteriors)
    if k == 1:
        return [1.0]
    alpha = np.array([p.alpha for p in posteriors])[:, None]
    beta = np.array([p.beta for p in posteriors])[:, None]
    mean = alpha / (alpha + beta)
    sd = np.sqrt(alpha * beta / ((alpha + beta) ** 2 * (alpha + beta + 1.0)))
    local = mean + sd * np.linspace(-_Z, _Z, _GRID_PER_ARM)[None, :]
    grid = np.unique(np.clip(np.concatenate([local.ravel(), _UNIFORM]), 0.0, 1.0))
    cdf = special.betainc(alpha, beta, grid[None, :])
    mass = np.diff(cdf, axis=1)  # each arm's probability in each grid interval
    probs = np.empty(k)
    for i in range(k):
        others = np.prod(np.delete(cdf, i, axis=0), axis=0)
        probs[i] = float(mass[i] @ (0.5 * (others[1:] + others[:-1])))
    probs = np.clip(probs, 0.0, None)
    total = probs.sum()
    return (probs / total).tolist() if total > 0 else [1.0 / k] * k
