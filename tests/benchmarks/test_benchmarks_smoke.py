"""Smoke tests of the benchmark machinery (seconds, not minutes): compare's run loop
against the ONNX wrapper and the floor, the locustfile's user classes, and (slow) a short
locust run against the whole stack."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import compare
from benchmarks.harness import REPO

pytestmark = pytest.mark.timeout(90)


def test_compare_rows_for_the_onnx_wrapper_and_the_floor(credit_model_dir: Path) -> None:
    doc = compare.run(compare.Options(
        targets=["arbiter-onnx", "floor"], transports=["rest", "grpc"], concurrency=[4],
        duration_s=1.0, warmup_s=0.0, repeats=1, install=False, models=credit_model_dir,
        write=False,
    ))
    assert doc["broken"] == {}
    cells = {(r["target"], r["transport"]) for r in doc["rows"]}
    assert cells == {("arbiter-onnx", "rest"), ("arbiter-onnx", "grpc"), ("floor", "rest")}
    for row in doc["rows"]:
        assert row["rps"] > 0, row
        assert row["errors"] == 0, row
        assert 0 < row["p50_ms"] <= row["p99_ms"], row
        assert row["cpu_s_per_req"] > 0 and row["peak_rss_mb"] > 0, row
        assert row["vs_floor"] is not None and math.isfinite(row["vs_floor"])
    goals = {g["goal"]: g["met"] for g in doc["targets_met"]}
    assert goals["ONNX wrapper REST c=16 >= 4x MLServer"] is None  # not measured here
    assert "| arbiter-onnx | rest | 4 |" in compare.markdown(doc)


_LOCUST_PROBE = """
import inspect, json
from locust import User
import benchmarks.locustfile as lf
out = {}
for name in ("RestUser", "GrpcUser"):
    cls = getattr(lf, name)
    out[name] = {
        "is_user": issubclass(cls, User), "abstract": cls.abstract,
        "tasks": [t.__name__ for t in cls.tasks], "wait_time": callable(cls.wait_time),
        "fires_events": "events.request.fire" in inspect.getsource(cls),
    }
share = lf.ArmShare(bucket_s=1.0)
for arm in ("gbm", "gbm", "lr"):
    share.add(arm)
out["share"] = share.rows()
out["best"] = lf.BEST_ARM
print(json.dumps(out))
"""


def test_locustfile_imports_and_its_users_are_well_formed() -> None:
    # locust monkey-patches the stdlib with gevent on import: probe it in a subprocess
    proc = subprocess.run([sys.executable, "-c", _LOCUST_PROBE], capture_output=True,
                          text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("RestUser", "GrpcUser"):
        user = out[name]
        assert user["is_user"] and not user["abstract"], user
        assert user["tasks"] == ["infer_and_feedback"] and user["wait_time"], user
    assert out["GrpcUser"]["fires_events"]
    assert out["best"] == "gbm"
    row = out["share"][0]
    assert row["decisions"] == 3 and row["best_arm_share"] == pytest.approx(2 / 3, abs=1e-3)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_loadtest_runs_locust_against_the_stack(credit_model_dir: Path,
                                               tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.loadtest", "--duration", "8s", "--users", "4",
         "--models", str(credit_model_dir), "--results", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=280)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    stats = list(tmp_path.glob("loadtest-*_stats.csv"))
    assert len(stats) == 1
    stem = str(stats[0])[: -len("_stats.csv")]
    assert Path(stem + ".html").exists()
    share = Path(stem + "_arm_share.csv").read_text().splitlines()
    assert share[0].startswith("t_start_s,decisions,") and len(share) >= 2


def test_compare_serves_the_one_step_scikit_learn_model(credit_model_dir: Path) -> None:
    """The fair MLServer pair's Arbiter side: a plain LogisticRegression made from the
    credit data, served and checked against its own predict_proba."""
    import joblib
    from sklearn.linear_model import LogisticRegression

    doc = compare.run(compare.Options(
        targets=["arbiter-sklearn-plain"], transports=["rest", "grpc"], concurrency=[2],
        duration_s=0.5, warmup_s=0.0, repeats=1, install=False, models=credit_model_dir,
        write=False,
    ))
    assert doc["broken"] == {}
    assert {(r["target"], r["transport"]) for r in doc["rows"]} == {
        ("arbiter-sklearn-plain", "rest"), ("arbiter-sklearn-plain", "grpc")}
    assert all(r["rps"] > 0 and r["errors"] == 0 for r in doc["rows"])
    assert type(joblib.load(credit_model_dir / "lr-plain.joblib")) is LogisticRegression
    goals = {g["goal"]: g["met"] for g in doc["targets_met"]}
    assert goals["one-step sklearn: Arbiter REST c=16 >= MLServer"] is None
