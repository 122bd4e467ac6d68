"""The demo end to end (a short replay through `arbiter up`), and `arbiter up`'s
startup failures: each ends with a clear message, exit code 1 and no process left."""

from __future__ import annotations

import asyncio
import collections
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml

from examples.credit import demo

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_short_replay_report_matches_the_decision_log(tmp_path: Path) -> None:
    report = demo.run(tmp_path / "out", passes=1, applicants=24)
    assert report["arbiter_up_exit_code"] == 0
    assert report["requests"] == 24 * len(demo.DEPLOYMENTS)
    assert report["feedback"] == {"sent": 72, "accepted": 72}
    docs = _stored_decisions(tmp_path / "out" / "run" / "arbiter.sqlite")
    by_deployment = collections.Counter(d["deployment"] for d in docs)
    assert by_deployment == {name: 24 for name in demo.DEPLOYMENTS}
    bandit = collections.Counter(d["routed"] for d in docs if d["deployment"] == "credit")
    assert dict(bandit) == report["bandit"]["traffic"]
    rewards: dict[str, list[float]] = collections.defaultdict(list)
    for d in docs:
        assert d["feedback"] is not None
        for model, reward in d["rewards"].items():
            rewards[model].append(reward)
    for model, figures in report["accuracy_by_model"].items():
        assert figures["scored"] == len(rewards[model])
        assert figures["accuracy"] == pytest.approx(np.mean(rewards[model]))
    _check_explanations(report, docs, tmp_path / "out")
    assert (tmp_path / "out" / "traffic_share.png").stat().st_size > 10_000
    replay = report["replay"]  # "always gbm" estimated off-policy from the logged decisions
    gbm_truth = [d["rewards"]["gbm"] for d in docs if d["deployment"] == "credit-cc"]
    assert replay["n"] == 24 and replay["true_accuracy"] == pytest.approx(np.mean(gbm_truth))
    dr = replay["estimators"]["dr"]
    assert dr["ci_low"] <= replay["true_accuracy"] <= dr["ci_high"]
    assert {"ips", "snips", "dr"} <= set(replay["estimators"])
    _check_fairness(report, docs)
    for attribute in ("sex", "age", "foreign_worker"):
        assert (tmp_path / "out" / "fairness" / f"fairness_{attribute}.png").stat().st_size \
            > 20_000


def _check_explanations(report: dict, docs: list[dict], out: Path) -> None:
    """Every refusal of credit-cc is explained (and no approval), as report.json says;
    the refused applicant's reasons and letter are its stored explanation's."""
    cc = [d for d in docs if d["deployment"] == "credit-cc"]
    refused = [d for d in cc if d["outputs"][d["routed"]]["label"]["data"] == [0]]
    explained = report["explanations"]
    assert explained["decisions"] == len(cc)
    assert explained["refusals"] == len(refused) > 0
    assert explained["refusals_explained"] == explained["refusals"]
    for d in cc:
        if d in refused:
            assert d["explanation"]["status"] == "done" and d["explanation"]["kind"] == "adverse"
        else:
            assert d["explanation"] is None
    applicant = report["refused_applicant"]
    stored = next(d for d in refused if d["id"] == applicant["decision_id"])
    sentences = [r["sentence"] for r in stored["explanation"]["reasons"]]
    assert 1 <= len(applicant["reasons"]) <= 4 and applicant["reasons"] == sentences[:4]
    letter = " ".join((out / "adverse_action_letter.txt").read_text().split())
    assert all(sentence in letter for sentence in applicant["reasons"])


def _check_fairness(report: dict, docs: list[dict]) -> None:
    """report.json's fairness.<deployment>.<model>.<attribute>.<group> equal what the
    stored decisions hold: rows per group, approvals and accuracy of each model."""
    for deployment in demo.DEPLOYMENTS:
        stored = [d for d in docs if d["deployment"] == deployment]
        by_model: dict[str, dict[str, list[tuple[int, int]]]] = collections.defaultdict(
            lambda: collections.defaultdict(list))
        for d in stored:
            female = d["inputs"]["input"]["data"][8] == 0  # personal_status_and_sex
            for model, outputs in d["outputs"].items():
                by_model[model]["female" if female else "male"].append(
                    (outputs["label"]["data"][0], d["feedback"]["truth"][0]))
        figures = report["fairness"][deployment]
        assert set(figures) == set(by_model)
        for model, groups in by_model.items():
            sex = figures[model]["sex"]
            for group, pairs in groups.items():
                labels, truth = np.array(pairs).T
                assert sex[group]["decisions"] == len(pairs)
                assert sex[group]["approval_rate"] == pytest.approx(np.mean(labels == 1))
                assert sex[group]["accuracy"] == pytest.approx(np.mean(labels == truth))
            assert sex["disparate_impact"]["reference"] == "male"
            for attribute in ("age", "foreign_worker"):
                assert "disparate_impact" in figures[model][attribute]


def _stored_decisions(path: Path) -> list[dict]:
    """Every decision of every demo deployment, read back through the store's API."""
    from gateway.config import StoreSpec
    from gateway.decisions import build_store

    async def read() -> list[dict]:
        store = build_store(StoreSpec(kind="sqlite", path=path))
        await store.open(list(demo.DEPLOYMENTS))
        try:
            return [d.to_doc() for name in demo.DEPLOYMENTS for d in await store.list(name)]
        finally:
            await store.close()

    return asyncio.run(read())


def _run_file(tmp_path: Path, gateway_port: int | None = None, settings: Path | None = None,
              gateway_config: str | None = None) -> Path:
    models = ROOT / "examples" / "credit" / "models"
    if not (models / "lr.yaml").exists():
        from examples.credit.train import train

        train(models)
    run_file, ports = demo.write_run_files(models, tmp_path / "run")
    run = yaml.safe_load(run_file.read_text())
    run["pods"] = {"lr": run["pods"]["lr"]}
    if settings is not None:
        run["pods"]["lr"]["settings"] = str(settings)
    if gateway_port is not None:
        run["gateway"]["http_port"] = gateway_port
    if gateway_config is not None:
        (tmp_path / "run" / "gateway.yaml").write_text(gateway_config)
    run_file.write_text(yaml.safe_dump(run))
    return run_file


def _up(run_file: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "up", "--config", str(run_file)],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )


def _no_process_mentions(text: str) -> bool:
    for proc in psutil.process_iter(["cmdline"]):
        if text in " ".join(proc.info["cmdline"] or []):
            return False
    return True


def test_port_taken(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = _up(_run_file(tmp_path, gateway_port=port))
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stdout + result.stderr


@pytest.mark.slow
def test_missing_model_file(tmp_path: Path) -> None:
    settings = tmp_path / "broken.yaml"
    settings.write_text(yaml.safe_dump({"name": "credit-lr", "framework": "sklearn",
                                        "uri": "does-not-exist.joblib"}))
    result = _up(_run_file(tmp_path, settings=settings))
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "lr exited during startup" in output
    assert "model file not found" in output and "does-not-exist.joblib" in output
    assert _no_process_mentions(str(tmp_path))


def test_bad_gateway_config(tmp_path: Path) -> None:
    bad = "models: {lr: {url: grpc://127.0.0.1:1, name: credit-lr}}\n" \
          "deployments: {credit: {router: {kind: thompson, arms: [lr, xgb]}}}\n"
    result = _up(_run_file(tmp_path, gateway_config=bad))
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "gateway: invalid gateway config" in output  # refused before any pod starts
    assert "names model 'xgb', which is not under 'models'" in output
    assert "[lr]" not in output
    assert _no_process_mentions(str(tmp_path))
