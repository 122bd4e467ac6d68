"""Off-policy estimators: a candidate policy's mean reward from decisions another
policy logged.

Every estimator takes, per logged decision i (one-dimensional arrays of length n):

* ``rewards``: r_i in [0, 1], the reward of the arm a_i that the logging policy chose;
* ``logging``: mu_i = mu(a_i | x_i) in (0, 1], the probability with which the logging
  policy chose a_i (the decision's recorded propensity);
* ``target``: pi_i = pi(a_i | x_i) in [0, 1], the probability with which the candidate
  would have chosen the same arm.

The importance weight is w_i = pi_i / mu_i. The estimators are

* IPS (inverse propensity scoring): ``V = mean(w_i r_i)``; unbiased when mu_i > 0
  wherever pi puts mass (Horvitz & Thompson, JASA 1952; as an off-policy estimator in
  Dudik, Langford & Li, "Doubly Robust Policy Evaluation and Learning", ICML 2011);
* SNIPS (self-normalised IPS): ``V = sum(w_i r_i) / sum(w_i)``; slightly biased,
  often much lower variance, and invariant to adding a constant to every reward
  (Swaminathan & Joachims, "The Self-Normalized Estimator for Counterfactual
  Learning", NeurIPS 2015);
* DR (doubly robust): ``V = mean(q_i + w_i (r_i - rhat_i))``, where ``rhat_i`` is a
  reward model's prediction for the logged arm and ``q_i = sum_a pi(a | x_i)
  rhat(x_i, a)`` its prediction for the candidate; unbiased when either the
  propensities or the reward model are right (Dudik, Langford & Li 2011).

Confidence intervals are normal approximations on the per-decision terms:
``V +- z * sd(terms) / sqrt(n)`` with the sample standard deviation (``ddof=1``) and
z = 1.96 for 95 %. For SNIPS the terms are its delta-method linearisation
``w_i (r_i - V) / mean(w)``. An interval needs n >= 2; a value that is undefined (no
decision, or SNIPS with every weight 0) is NaN, and so are its bounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "Z_95",
    "Estimate",
    "importance_weights",
    "ips",
    "snips",
    "doubly_robust",
    "effective_sample_size",
]

Z_95 = 1.959963984540054
"""Two-sided 95 % quantile of the standard normal distribution."""

_NAN = float("nan")


@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate of a mean reward and its confidence interval.

    Attributes:
        value: estimated mean reward (NaN when undefined).
        ci_low: lower bound of the interval (NaN when undefined).
        ci_high: upper bound of the interval (NaN when undefined).
    """

    value: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict[str, float | None]:
        """``{"value", "ci_low", "ci_high"}``, NaN as None (JSON null)."""
        return {
            name: (None if math.isnan(x) else x)
            for name, x in (("value", self.value), ("ci_low", self.ci_low),
                            ("ci_high", self.ci_high))
        }


def importance_weights(logging: ArrayLike, target: ArrayLike) -> np.ndarray:
    """w_i = pi_i / mu_i, float64 ``[n]``.

    Raises:
        ValueError: arrays of different lengths or not one-dimensional, a logging
            probability outside (0, 1], or a target probability outside [0, 1].
    """
    mu = np.asarray(logging, dtype=np.float64)
    pi = np.asarray(target, dtype=np.float64)
    if mu.ndim != 1 or mu.shape != pi.shape:
        raise ValueError(f"logging and target must be [n] arrays, got {mu.shape}, {pi.shape}")
    if not np.all((mu > 0.0) & (mu <= 1.0)):
        raise ValueError("logging probabilities must be in (0, 1]")
    if not np.all((pi >= 0.0) & (pi <= 1.0)):
        raise ValueError("target probabilities must be in [0, 1]")
    return pi / mu


def _rewards(rewards: ArrayLike, n: int) -> np.ndarray:
    r = np.asarray(rewards, dtype=np.float64)
    if r.shape != (n,):
        raise ValueError(f"rewards must be an [{n}] array, got {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError("rewards must be finite")
    return r


def _interval(value: float, terms: np.ndarray, z: float) -> Estimate:
    """``value +- z * sd(terms) / sqrt(n)``; NaN bounds when n < 2 or value is NaN."""
    n = terms.size
    if n < 2 or math.isnan(value):
        return Estimate(value, _NAN, _NAN)
    half = z * float(np.std(terms, ddof=1)) / math.sqrt(n)
    return Estimate(value, value - half, value + half)


def ips(rewards: ArrayLike, logging: ArrayLike, target: ArrayLike, z: float = Z_95) -> Estimate:
    """Inverse propensity scoring: ``mean(w_i r_i)`` (see the module docstring).

    Args:
        rewards: r_i, ``[n]``.
        logging: mu_i in (0, 1], ``[n]``.
        target: pi_i in [0, 1], ``[n]``.
        z: normal quantile of the interval (1.96: 95 %).

    Returns:
        The estimate; NaN when n = 0.

    Raises:
        ValueError: as :func:`importance_weights`, or rewards of another length.
    """
    w = importance_weights(logging, target)
    terms = w * _rewards(rewards, w.size)
    value = float(terms.mean()) if terms.size else _NAN
    return _interval(value, terms, z)


def snips(rewards: ArrayLike, logging: ArrayLike, target: ArrayLike,
          z: float = Z_95) -> Estimate:
    """Self-normalised IPS: ``sum(w_i r_i) / sum(w_i)`` (Swaminathan & Joachims 2015).

    The interval uses the delta-method terms ``w_i (r_i - V) / mean(w)``.

    Returns:
        The estimate; NaN when n = 0 or every weight is 0 (no logged decision chose
        an arm the candidate would choose).

    Raises:
        ValueError: as :func:`ips`.
    """
    w = importance_weights(logging, target)
    r = _rewards(rewards, w.size)
    total = float(w.sum())
    if total <= 0.0:
        return Estimate(_NAN, _NAN, _NAN)
    value = float((w * r).sum()) / total
    terms = w * (r - value) / (total / w.size)
    return _interval(value, terms, z)


def doubly_robust(rewards: ArrayLike, logging: ArrayLike, target: ArrayLike,
                  reward_hat: ArrayLike, target_reward_hat: ArrayLike,
                  z: float = Z_95) -> Estimate:
    """Doubly robust: ``mean(q_i + w_i (r_i - rhat_i))`` (Dudik, Langford & Li 2011).

    Args:
        rewards: r_i, ``[n]``.
        logging: mu_i in (0, 1], ``[n]``.
        target: pi_i in [0, 1], ``[n]``.
        reward_hat: rhat(x_i, a_i), the reward model's prediction for the logged arm,
            ``[n]``.
        target_reward_hat: q_i = sum over arms a of pi(a | x_i) rhat(x_i, a), the
            reward model's prediction for the candidate, ``[n]``.
        z: normal quantile of the interval (1.96: 95 %).

    Returns:
        The estimate; NaN when n = 0.

    Raises:
        ValueError: as :func:`ips`, or predictions of another length.
    """
    w = importance_weights(logging, target)
    r = _rewards(rewards, w.size)
    rhat = _rewards(reward_hat, w.size)
    q = _rewards(target_reward_hat, w.size)
    terms = q + w * (r - rhat)
    value = float(terms.mean()) if terms.size else _NAN
    return _interval(value, terms, z)


def effective_sample_size(weights: ArrayLike) -> float:
    """Kish's effective sample size of importance weights, ``(sum w)^2 / sum w^2``
    (Kish, "Survey Sampling", 1965): n when every weight is equal, near 1 when one
    decision carries all the weight, 0 when every weight is 0."""
    w = np.asarray(weights, dtype=np.float64)
    square = float((w * w).sum())
    return float(w.sum()) ** 2 / square if square > 0.0 else 0.0
