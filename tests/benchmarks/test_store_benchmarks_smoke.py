"""Smoke tests of the store, worker and gateway-cost benchmarks: each script runs in a
tiny mode (one repeat, 1 s cells, the memory and SQLite stores, the fake pod) and writes
a JSON result with the expected keys and positive numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.harness import REPO

pytestmark = pytest.mark.timeout(240)


def _run(module: str, *args: str, results: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args, "--no-install", "--results", str(results)],
        capture_output=True, text=True, cwd=REPO, timeout=220)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    latest = list(results.glob("*-latest.json"))
    assert len(latest) == 1, latest
    return json.loads(latest[0].read_text())


def test_store_cost_measures_memory_and_sqlite(credit_model_dir: Path, tmp_path: Path) -> None:
    doc = _run("benchmarks.store_cost", "--stores", "memory,sqlite", "--duration", "1",
               "--warmup", "0", "--repeats", "1", "--concurrency", "4",
               "--micro-seconds", "0.5", "--micro-rate", "500", "--feedback-decisions", "300",
               "--models", str(credit_model_dir), results=tmp_path)
    assert doc["broken"] == {}
    configs = {(r["store"], r["decision_writes"]) for r in doc["micro"]}
    assert configs == {(k, m) for k in ("memory", "sqlite") for m in ("behind", "before_answer")}
    for row in doc["micro"]:
        assert 0 < row["create_p50_us"] <= row["create_p99_us"], row
        assert row["committed_per_s"] > 0, row
        if row["decision_writes"] == "behind":
            assert row["feedback_per_s"] > 0 and row["feedback_p50_us"] > 0, row
    assert {(r["store"], r["decision_writes"], r["concurrency"]) for r in doc["e2e"]} == {
        (k, m, 4) for k, m in configs}
    for row in doc["e2e"]:
        assert row["rps"] > 0 and row["errors"] == 0, row
        assert 0 < row["p50_ms"] <= row["p99_ms"] and row["cpu_ms_per_req"] > 0, row
        assert row["added_p50_ms"] is not None, row
    assert {r["store"] for r in doc["feedback"]} == {"memory", "sqlite"}
    for row in doc["feedback"]:
        assert row["per_s"] > 0 and row["errors"] == 0 and row["p50_ms"] > 0, row
    assert {g["goal"].split(":")[0] for g in doc["targets_met"]} == set()  # c=16 not run
    assert doc["fsync_us"] > 0 and doc["machine"]["usable_cores"] >= 1


def test_workers_compares_one_and_two_gateway_workers(credit_model_dir: Path,
                                                     tmp_path: Path) -> None:
    doc = _run("benchmarks.workers", "--pods", "fake", "--duration", "1", "--warmup", "0",
               "--repeats", "1", "--concurrency", "8", "--models", str(credit_model_dir),
               results=tmp_path)
    assert [(r["pod"], r["workers"]) for r in doc["rows"]] == [("fake", 1), ("fake", 2)]
    for row in doc["rows"]:
        assert row["rps"] > 0 and row["errors"] == 0, row
        assert 0 < row["p50_ms"] <= row["p99_ms"], row
        assert row["gateway_cpu_ms_per_req"] > 0 and row["pod_cpu_ms_per_req"] > 0, row
        assert 0 < row["machine_busy_share"] <= 1, row
    (ratio,) = doc["ratios"]
    assert ratio["pod"] == "fake" and ratio["ratio"] > 0


def test_gateway_cost_measures_the_gateway_in_front_of_the_fake_pod(
        credit_model_dir: Path, tmp_path: Path) -> None:
    doc = _run("benchmarks.gateway_cost", "--duration", "1", "--warmup", "0",
               "--repeats", "1", "--concurrency", "1,4", "--models", str(credit_model_dir),
               results=tmp_path)
    cells = {(c["target"], c["concurrency"]): c for c in doc["cells"]}
    assert set(cells) == {(t, c) for t in ("direct", "rest", "grpc") for c in (1, 4)}
    for (target, _), cell in cells.items():
        assert cell["rps"] > 0 and cell["errors"] == 0, cell
        assert 0 < cell["p50_ms"] <= cell["p99_ms"] and cell["cpu_ms_per_req"] > 0, cell
        if target != "direct":  # the gateway does more than the pod it calls
            assert cell["cpu_ms_per_req"] > cells[("direct", cell["concurrency"])][
                "cpu_ms_per_req"], cell
            assert "added_p50_ms" in cell
    measures = [t["measure"] for t in doc["targets"]]
    assert measures == ["added latency REST c=1, p50", "added latency REST c=1, p99"]
