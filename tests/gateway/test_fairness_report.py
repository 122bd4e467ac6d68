"""``arbiter report``: fairness figures and charts from a decision store, with the
monitoring spec the gateway recorded there."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import StoreSpec
from gateway.decisions import Decision, build_store
from gateway.groups import MonitoringSpec, resolved
from gateway.monitoring import MONITORING_VALUE
from tests.fakes import RuleCreditWrapper, fairness_rows

ROOT = Path(__file__).resolve().parents[2]
SPEC = MonitoringSpec.model_validate({
    "groups": [{"name": "sex", "column": 8, "categories": {"female": [0], "male": [3]}},
               {"name": "age", "column": 12, "bands": [0, 25, 40, 60, 200]}],
    "reference": {"sex": "male"}, "windows": ["hour", "day"]})
START = 1_767_225_600.0  # 2026-01-01T00:00Z
MODELS = {"fair": RuleCreditWrapper(err_every=8),
          "biased": RuleCreditWrapper(refuse_column=8, refuse_value=0.0)}


def _label_doc(value: int) -> dict:
    return {"label": {"datatype": "INT64", "shape": [1], "data": [value]}}


async def _write(path: Path, n: int, record_spec: bool) -> None:
    """``n`` decisions over three hours: fair answers, biased shadows, truth for all."""
    store = build_store(StoreSpec(kind="sqlite", path=path, flush_interval_ms=1))
    await store.open(["cc"])
    x, y = fairness_rows(n)
    labels = {m: w.predict({"input": x})["label"] for m, w in MODELS.items()}
    try:
        if record_spec:
            await store.put_value("cc", MONITORING_VALUE, resolved(SPEC).model_dump(mode="json"))
        for i in range(n):
            decision = Decision(
                id=f"d{i:04d}", time=START + i * 3 * 3600 / n, deployment="cc",
                router="champion_challenger", routed="fair", shadows=["biased"],
                inputs={"input": {"datatype": "FP32", "shape": [1, 20],
                                  "data": x[i].tolist()}},
                outputs={"fair": _label_doc(int(labels["fair"][i]))})
            await store.create(decision, wait=True)
            store.add_shadow_output(decision.id, "biased", _label_doc(int(labels["biased"][i])))
            await store.record_feedback(decision, {"truth": [int(y[i])], "time": START}, {},
                                        None)
    finally:
        await store.close()


def _report(store: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "report", "--store", str(store),
         "--deployment", "cc", "--out", str(out), *extra],
        capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_report_from_the_store(tmp_path: Path) -> None:
    store = tmp_path / "arbiter.sqlite"
    asyncio.run(_write(store, 300, record_spec=True))
    result = _report(store, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    doc = json.loads((tmp_path / "out" / "fairness.json").read_text())
    x, y = fairness_rows(300)
    female = x[:, 8] == 0
    for model, wrapper in MODELS.items():
        label = wrapper.predict({"input": x})["label"]
        groups = doc["windows"]["all"]["buckets"][0]["models"][model]["sex"]["groups"]
        for group, rows in (("female", female), ("male", ~female)):
            assert groups[group]["decisions"] == int(rows.sum())
            assert groups[group]["approval_rate"] == pytest.approx(label[rows].mean())
            assert groups[group]["accuracy"] == pytest.approx((label[rows] == y[rows]).mean())
        assert f"{model} sex: female n=30" in result.stdout
    di = doc["windows"]["all"]["buckets"][0]["models"]["biased"]["sex"]["fairness"]["female"]
    assert di["disparate_impact"]["value"] == 0.0
    hours = doc["windows"]["hour"]["buckets"]
    assert [b["bucket"] for b in hours] == ["2026-01-01T00:00Z", "2026-01-01T01:00Z",
                                            "2026-01-01T02:00Z"]
    assert sum(b["models"]["fair"]["sex"]["groups"]["female"]["decisions"]
               for b in hours) == 30
    assert doc["series"]["every_s"] == 900  # 3 h in at most 24 points
    assert len(doc["series"]["buckets"]) == 12
    for attribute in ("sex", "age"):
        assert (tmp_path / "out" / f"fairness_{attribute}.png").stat().st_size > 20_000


def test_report_needs_a_monitoring_spec(tmp_path: Path) -> None:
    store = tmp_path / "arbiter.sqlite"
    asyncio.run(_write(store, 20, record_spec=False))
    result = _report(store, tmp_path / "out")
    assert result.returncode == 1
    assert "holds no monitoring spec of deployment 'cc'" in result.stderr
    missing = _report(tmp_path / "nowhere.sqlite", tmp_path / "out")
    assert missing.returncode == 1 and "decision store not found" in missing.stderr
