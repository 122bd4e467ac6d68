"""``arbiter simulate``: outcome files, the real routers over recorded outcomes through
the gateway's learning path (regret, delayed feedback, promotions, false promotions),
the command's JSON and chart, the credit outcomes, and the promotion-safety figures of
the default champion-challenger rule."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import TypeAdapter

from examples.credit.outcomes import credit_outcomes
from gateway.cli import main
from gateway.config import ConfigError, GatewayConfig
from gateway.simulate import (
    Outcomes,
    bernoulli_outcomes,
    load_outcomes,
    promotion_trials,
    run_router,
    simulate,
    write_outcomes,
)
from routers import RouterSpec

SPECS = TypeAdapter(RouterSpec)


def _cc(**promotion) -> RouterSpec:
    return SPECS.validate_python({"kind": "champion_challenger", "champion": "champion",
                                  "challengers": ["challenger"],
                                  "promotion": {"auto": True, **promotion}})


def test_outcomes_round_trip_and_bad_files(tmp_path: Path) -> None:
    table = Outcomes(("lr", "gbm"), np.array([[1.0, 0.0], [0.5, 1.0]]))
    path = write_outcomes(table, tmp_path / "o.csv")
    assert path.read_text() == "lr,gbm\n1,0\n0.5,1\n"
    again = load_outcomes(path)
    assert again.models == ("lr", "gbm") and np.array_equal(again.rewards, table.rewards)
    assert again.means() == {"lr": 0.75, "gbm": 0.5}
    for text, message in (("lr,lr\n1,0\n", "each model once"), ("lr,gbm\n1\n", "one number"),
                          ("lr,gbm\n1,2\n", r"in \[0, 1\]"), ("lr,gbm\n", r"in \[0, 1\]")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_outcomes(path)
    with pytest.raises(ConfigError, match="not found"):
        load_outcomes(tmp_path / "missing.csv")


def test_regret_of_a_fixed_split_is_the_gap_to_the_best_model() -> None:
    """Always lr (weights 1/0) on five requests where gbm is right more often: the
    regret after each request is the running sum of gbm's reward minus lr's."""
    table = Outcomes(("lr", "gbm"), np.array([[1, 1], [0, 1], [1, 0], [0, 1], [1, 1.0]]))
    spec = SPECS.validate_python({"kind": "weighted", "weights": {"lr": 1, "gbm": 0}})
    run = run_router("d", spec, table, seed=0)
    assert run.best == "gbm"
    assert run.regret.tolist() == [0, 1, 0, 1, 1]
    assert run.reward.tolist() == [1, 0, 1, 0, 1]
    assert run.traffic_share(windows=5) == {"lr": [1.0] * 5, "gbm": [0.0] * 5}


@pytest.mark.parametrize(("delay", "decision"), [(0, 5), (3, 8)])
def test_promotion_happens_when_the_delayed_feedback_reaches_min_samples(delay, decision):
    """The challenger is always right and the champion always wrong. With min_samples 5
    the rule fires on the fifth feedback: the feedback of decision 4 is learned before
    decision 5 is routed (no delay), or 3 decisions later; from then on the challenger
    answers."""
    table = Outcomes(("champion", "challenger"), np.tile([0.0, 1.0], (20, 1)))
    run = run_router("d", _cc(min_samples=5), table, seed=0, feedback_delay=delay)
    assert [(p["decision"], p["champion"], p["previous"]) for p in run.promotions] == [
        (decision, "challenger", "champion")]
    assert run.promotions[0]["probability"] > 0.99
    assert run.routed.tolist() == [0] * decision + [1] * (20 - decision)
    assert run.regret[-1] == decision


def _config(deployments: dict) -> GatewayConfig:
    models = {m: {"url": f"http://127.0.0.1:{9000 + i}", "name": m}
              for i, m in enumerate(("lr", "gbm", "mlp"))}
    return GatewayConfig.model_validate({"models": models, "deployments": deployments,
                                         "store": {"kind": "memory"}})


DEPLOYMENTS = {
    "ts": {"router": {"kind": "thompson", "arms": ["lr", "gbm", "mlp"]}},
    "eg": {"router": {"kind": "epsilon_greedy", "arms": ["lr", "gbm", "mlp"], "epsilon": 0.1}},
    "cc": {"router": {"kind": "champion_challenger", "champion": "lr",
                      "challengers": ["gbm", "mlp"],
                      "promotion": {"auto": True, "min_samples": 50, "probability": 0.9}}},
}


def test_bandits_learn_the_best_model_and_a_worse_challenger_is_not_promoted() -> None:
    """lr 0.6, gbm 0.8, mlp 0.5 over 1,500 requests and 4 seeds: both bandits send most
    of the last window's traffic to gbm with regret well below always-lr's 300;
    champion-challenger promotes gbm on every seed, never mlp."""
    table = bernoulli_outcomes({"lr": 0.6, "gbm": 0.8, "mlp": 0.5}, 2000,
                               np.random.default_rng(1))
    report = simulate(_config(DEPLOYMENTS), table, seeds=4, steps=1500)
    for name in ("ts", "eg"):
        agg = report["deployments"][name]["aggregate"]
        assert agg["traffic_share"]["gbm"][-1] > 0.8, name
        assert agg["final_regret"]["median"] < 100, name
    cc = report["deployments"]["cc"]
    assert cc["aggregate"]["promotion_rate"] == 1.0
    assert cc["aggregate"]["false_promotion_rate"] == 0.0
    assert all(r["promotions"][0]["champion"] == "gbm" for r in cc["runs"])
    assert cc["best_model"] == "gbm" and len(report["checkpoints"]) == 100
    assert len(cc["aggregate"]["traffic_share"]["gbm"]) == 20


def test_a_false_promotion_is_counted_against_the_outcome_means() -> None:
    """A lax rule (5 samples, P >= 0.6) promotes a challenger 3 points worse on some
    seeds; each such seed counts once in the false-promotion rate."""
    table = bernoulli_outcomes({"lr": 0.78, "gbm": 0.75}, 5000, np.random.default_rng(2))
    config = _config({"cc": {"router": {
        "kind": "champion_challenger", "champion": "lr", "challengers": ["gbm"],
        "promotion": {"auto": True, "min_samples": 5, "probability": 0.6}}}})
    truth = table.means()
    report = simulate(config, table, seeds=10, steps=300)
    runs = report["deployments"]["cc"]["runs"]
    false_seeds = sum(any(truth[p["champion"]] < truth[p["previous"]] for p in r["promotions"])
                      for r in runs)
    assert false_seeds > 0
    assert all(p["false"] == (p["champion"] == "gbm") for r in runs for p in r["promotions"])
    assert report["deployments"]["cc"]["aggregate"]["false_promotion_rate"] == false_seeds / 10


def test_simulate_refuses_models_without_outcomes() -> None:
    table = Outcomes(("lr", "gbm"), np.ones((3, 2)))
    with pytest.raises(ConfigError, match=r"routes to \['mlp'\]"):
        simulate(_config({"ts": DEPLOYMENTS["ts"]}), table, seeds=1, steps=10)
    with pytest.raises(ConfigError, match="no deployment 'nope'"):
        simulate(_config({"ts": DEPLOYMENTS["ts"]}), table, seeds=1, steps=10,
                 deployments=["nope"])


def test_simulate_command_writes_the_report_and_chart(tmp_path: Path, capsys) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(_config(DEPLOYMENTS).model_dump(mode="json")))
    outcomes = write_outcomes(
        bernoulli_outcomes({"lr": 0.7, "gbm": 0.8, "mlp": 0.6}, 300, np.random.default_rng(0)),
        tmp_path / "outcomes.csv")
    out = tmp_path / "sim"
    assert main(["simulate", "--config", str(config), "--outcomes", str(outcomes),
                 "--seeds", "3", "--steps", "400", "--feedback-delay", "10",
                 "--out", str(out)]) == 0
    report = json.loads((out / "simulation.json").read_text())
    assert (report["seeds"], report["steps"], report["feedback_delay"]) == (3, 400, 10)
    assert set(report["deployments"]) == {"ts", "eg", "cc"}
    assert [len(d["runs"]) for d in report["deployments"].values()] == [3, 3, 3]
    assert (out / "regret.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ts (thompson): final regret median" in capsys.readouterr().out
    bad = ["simulate", "--config", str(config), "--outcomes", str(tmp_path / "x.csv"),
           "--seeds", "1", "--out", str(out)]
    assert main(bad) == 2


def test_credit_outcomes_are_each_models_holdout_correctness(credit_models) -> None:
    folder = credit_models["holdout"].parent
    outcomes = credit_outcomes(folder)
    metrics = json.loads(credit_models["metrics"].read_text())
    assert outcomes.rewards.shape == (200, 3)
    assert set(np.unique(outcomes.rewards)) <= {0.0, 1.0}
    for model, accuracy in outcomes.means().items():
        assert accuracy == pytest.approx(metrics[model]), model


CHAMPION = 0.775  # about the credit models' hold-out accuracy
STEPS = 3000


@functools.cache
def _trials(challenger: float) -> dict:
    """The default rule (automatic; 200 samples each side, P >= 0.975, checked on every
    feedback) on 100 seeded streams of independent Bernoulli outcomes of 3,000
    decisions: the champion right with probability 0.775, the challenger with
    ``challenger``."""
    return promotion_trials(_cc(), {"champion": CHAMPION, "challenger": challenger},
                            seeds=100, steps=STEPS)


@pytest.mark.slow
def test_promotion_safety_figures_of_the_default_rule() -> None:
    """A challenger 2 points worse is promoted on 3 of 100 seeds (at most 5 % false
    promotions), each within 800 decisions (the rule looks at every feedback from the
    200th on, and the early looks are where chance wins). A challenger 3 points better
    is promoted on 98 of 100 seeds within 3,000 decisions, after a median of 650
    (quartiles 269.25 and 1,494.75)."""
    worse = _trials(CHAMPION - 0.02)
    assert worse["false_promotions"] == worse["promoted"] == 3
    assert worse["false_promotion_rate"] <= 0.05
    assert max(d for d in worse["decisions"] if d is not None) < 800
    better = _trials(CHAMPION + 0.03)
    assert (better["promoted"], better["false_promotions"]) == (98, 0)
    first = better["first_promotion_decision"]
    assert (first["p25"], first["median"], first["p75"]) == pytest.approx((269.25, 650, 1494.75))
