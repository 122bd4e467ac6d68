"""What the console reads and how it escapes: the newest decisions from a real store
(dense and sparse histories, rare filters), traffic shares, posterior intervals against
scipy's, category names, and markup that client data cannot break out of."""

from __future__ import annotations

import random

import pytest
from scipy import stats

from gateway.config import StoreSpec
from gateway.console.markup import Html, esc, json_script, tag
from gateway.console.reading import Encoding, arm_rows, newest, traffic
from gateway.decisions import Decision, build_store

NOW = 1_800_000_000.0


def _decision(i: int, when: float, routed: str = "lr") -> Decision:
    return Decision(id=f"d{i:06d}", time=when, deployment="credit", router="thompson",
                    routed=routed, propensity=0.5)


async def _store_with(decisions: list[Decision]):
    store = build_store(StoreSpec(kind="memory"))
    await store.open([])
    for d in decisions:
        await store.create(d)
    return store


async def test_newest_decisions_come_newest_first_from_dense_and_sparse_history() -> None:
    rng = random.Random(0)
    burst = [_decision(i, NOW - 5 + rng.random() * 2) for i in range(2300)]
    sparse = [_decision(10_000 + i, NOW - 86_400 * (i + 1) - rng.random() * 3600)
              for i in range(40)]
    store = await _store_with(burst + sparse)
    try:
        expected = sorted(burst + sparse, key=lambda d: d.time, reverse=True)
        got = await newest(store, "credit", 25, now=NOW)
        assert [d.id for d in got] == [d.id for d in expected[:25]]
        rare = await newest(store, "credit", 30, lambda d: int(d.id[1:]) % 50 == 0, now=NOW)
        wanted = [d for d in expected if int(d.id[1:]) % 50 == 0][:30]
        assert [d.id for d in rare] == [d.id for d in wanted]
        assert len(rare) == 30
        assert await newest(store, "elsewhere", 10, now=NOW) == []
    finally:
        await store.close()


def test_traffic_shares_per_bucket_and_in_total() -> None:
    routed = ["lr"] * 30 + ["gbm"] * 10 + ["lr"] * 10 + ["gbm"] * 30
    decisions = [_decision(i, NOW + i, m) for i, m in enumerate(routed)]
    doc = traffic(decisions, ["lr", "gbm", "mlp"], buckets=2)
    assert doc["decisions"] == 80
    assert doc["total"] == {"lr": 0.5, "gbm": 0.5, "mlp": 0.0}
    shares = {s["label"]: s["values"] for s in doc["series"]}
    assert shares["lr"] == pytest.approx([30 / 40, 10 / 40], abs=1 / 40)
    assert [a + b for a, b in zip(shares["lr"], shares["gbm"], strict=True)] == [1.0, 1.0]
    assert doc["x"][0] < doc["x"][1]
    assert traffic([], ["lr"])["x"] == []
    assert len(traffic(decisions, ["lr", "gbm"])["x"]) == 4  # one bucket per 20 decisions


def test_posterior_intervals_are_the_beta_and_wilson_intervals() -> None:
    thompson = {"arms": {"lr": {"n": 12, "reward_sum": 8.0, "alpha": 9.0, "beta": 5.0,
                                "mean": 9 / 14}}}
    row = arm_rows(thompson)[0]
    assert (row["low"], row["high"]) == pytest.approx(
        tuple(stats.beta.ppf([0.025, 0.975], 9.0, 5.0)), rel=1e-9)
    greedy = {"arms": {"gbm": {"n": 12, "reward_sum": 8.0, "mean": 8 / 12},
                       "mlp": {"n": 0, "reward_sum": 0.0, "mean": None}}}
    gbm, mlp = arm_rows(greedy)
    wilson = stats.binomtest(8, 12).proportion_ci(0.95, method="wilson")
    assert (gbm["low"], gbm["high"]) == pytest.approx((wilson.low, wilson.high), rel=1e-9)
    assert (mlp["mean"], mlp["low"], mlp["high"]) == (None, None, None)


def test_inputs_read_in_the_data_terms() -> None:
    encoding = Encoding(["sex", "age"], {0: ["female", "male"]}, ["bad", "good"])
    doc = {"datatype": "FP32", "shape": [2, 2], "data": [1.0, 33.0, 0.0, 71.5]}
    assert encoding.rows(doc) == [["male", 33.0], ["female", 71.5]]
    assert encoding.value(0, 7.0) == "7.0 (no such category)"
    assert encoding.rows({"shape": [1, 3], "data": [1, 2, 3]}) is None
    assert encoding.rows({"shape": [1, 2], "sha256": "ab"}) is None
    assert encoding.label(0) == "0 (bad)" and encoding.label(5) == "5"


def test_markup_escapes_client_data() -> None:
    attack = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
    assert "<" not in esc(attack) and '"' not in esc(attack)
    cell = tag("td", attack, title=attack)
    assert cell.count("<") == 2 and "onerror=alert" in cell  # as text, inside quotes
    assert tag("td", Html("<b>kept</b>")) == "<td><b>kept</b></td>"
    block = json_script("data", {"label": "</script><script>alert(3)</script>"})
    assert block.count("</script>") == 1 and block.endswith("</script>")
    assert json_script("n", [float("nan"), 1.5]).count("null") == 1
