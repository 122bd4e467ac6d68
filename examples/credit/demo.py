"""The main job, end to end, on the German credit data (``make demo``).

Starts three model pods and the gateway with ``arbiter up`` (config from
``examples/credit/arbiter.yaml`` and ``gateway.yaml``, on free ports), replays the
held-out applicants through the bandit, champion-challenger and shadow deployments with
tritonclient (alternately REST and gRPC), sends each applicant's true outcome as
delayed feedback by decision id, waits until every refusal of the champion-challenger
deployment has its explanation (``GET /v2/decisions/{id}/explanation``), then prints and
writes under ``--out``: ``report.json``, ``traffic_share.png``,
``adverse_action_letter.txt`` (one refused applicant's letter with its principal
reasons, see ``adverse_action.py``) and, from the store with ``arbiter report``,
``fairness/`` (approval and error rate per group over time, per model).

Usage: ``python -m examples.credit.demo [--out out] [--passes 5] [--applicants 200]``
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from pydantic import TypeAdapter

from examples.credit import adverse_action
from examples.credit.encoding import encode_frame, write_input_schema

HERE = Path(__file__).resolve().parent
DEPLOYMENTS = ("credit", "credit-cc", "credit-shadow")
FEEDBACK_DELAY = 25  # applicants between a decision and its outcome


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def write_run_files(models: Path, run_dir: Path) -> tuple[Path, dict[str, int]]:
    """Copy the example's run file and gateway config into ``run_dir`` with free ports
    and absolute paths. Returns the run file and the gateway's ports."""
    run_dir.mkdir(parents=True, exist_ok=True)
    run = yaml.safe_load((HERE / "arbiter.yaml").read_text())
    gateway = yaml.safe_load((HERE / "gateway.yaml").read_text())
    ports = iter(_free_ports(2 * len(run["pods"]) + 2))
    for key, pod in run["pods"].items():
        pod["settings"] = str(models / Path(pod["settings"]).name)
        pod["http_port"], pod["grpc_port"] = next(ports), next(ports)
        url = gateway["models"][key]["url"]
        scheme_port = pod["grpc_port"] if url.startswith("grpc") else pod["http_port"]
        gateway["models"][key]["url"] = f"{url.split('://')[0]}://127.0.0.1:{scheme_port}"
    run["gateway"].update(config="gateway.yaml", http_port=next(ports), grpc_port=next(ports))
    explain = gateway["deployments"]["credit-cc"]["explain"]
    for key in ("encoding", "reference_data", "reference_outcomes"):
        explain[key] = str(models / Path(explain[key]).name)
    explain["model_artifact"] = {k: str(models / Path(v).name)
                                 for k, v in explain["model_artifact"].items()}
    if not (models / "input_schema.json").exists():  # models trained before it existed
        write_input_schema(models)
    for deployment in gateway["deployments"].values():
        if "input_schema" in deployment:
            deployment["input_schema"] = str(models / "input_schema.json")
        if "monitoring" in deployment:
            deployment["monitoring"]["encoding"] = str(models / "encoding.json")
    gateway["store"]["path"] = str(run_dir / "arbiter.sqlite")
    for stale in run_dir.glob("arbiter.sqlite*"):
        stale.unlink()
    (run_dir / "gateway.yaml").write_text(yaml.safe_dump(gateway, sort_keys=False))
    (run_dir / "arbiter.yaml").write_text(yaml.safe_dump(run, sort_keys=False))
    return run_dir / "arbiter.yaml", run["gateway"]


def _http(method: str, url: str, body: object | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


class Up:
    """``arbiter up`` as a child process, its output in a log file."""

    def __init__(self, run_file: Path, log_path: Path, http_port: int) -> None:
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{http_port}"
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "up", "--config", str(run_file)],
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"arbiter up exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"gateway not ready after {timeout_s} s; see {self.log_path}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()
        return self.proc.returncode


class Replay:
    """Sends applicants through the deployments and their outcomes as feedback."""

    def __init__(self, gateway: dict[str, int]) -> None:
        import tritonclient.grpc as grpcclient
        import tritonclient.http as httpclient

        self.http = httpclient.InferenceServerClient(f"127.0.0.1:{gateway['http_port']}")
        self.grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{gateway['grpc_port']}")
        self.base = f"http://127.0.0.1:{gateway['http_port']}"
        self.latency_ms: dict[str, list[float]] = {"rest": [], "grpc": []}
        self.routed: dict[str, list[str]] = {d: [] for d in DEPLOYMENTS}
        self.decisions: list[dict] = []
        self.feedback_results: list[dict] = []
        self.pending: collections.deque = collections.deque()

    def infer(self, deployment: str, row: np.ndarray, protocol: str) -> dict:
        from tritonclient import grpc as g
        from tritonclient import http as h

        start = time.perf_counter()
        if protocol == "rest":
            tensor = h.InferInput("input", [1, row.size], "FP32")
            tensor.set_data_from_numpy(row.reshape(1, -1))
            result = self.http.infer(deployment, [tensor])
            params = result.get_response()["parameters"]
        else:
            tensor = g.InferInput("input", [1, row.size], "FP32")
            tensor.set_data_from_numpy(row.reshape(1, -1))
            result = self.grpc.infer(deployment, [tensor])
            params = {k: v.string_param for k, v in result.get_response().parameters.items()}
        self.latency_ms[protocol].append((time.perf_counter() - start) * 1000)
        label = int(result.as_numpy("label")[0])
        return {"deployment": deployment, "decision_id": params["decision_id"],
                "routed_model": params["routed_model"], "label": label, "protocol": protocol}

    def applicant(self, index: int, row: np.ndarray, truth: int) -> None:
        protocol = "rest" if index % 2 == 0 else "grpc"
        for deployment in DEPLOYMENTS:
            decision = self.infer(deployment, row, protocol)
            decision["truth"] = truth
            self.decisions.append(decision)
            self.routed[deployment].append(decision["routed_model"])
            self.pending.append((index + FEEDBACK_DELAY, decision))
        self.send_due(index)

    def send_due(self, index: int | None) -> None:
        by_deployment: dict[str, list] = collections.defaultdict(list)
        while self.pending and (index is None or self.pending[0][0] <= index):
            _, decision = self.pending.popleft()
            by_deployment[decision["deployment"]].append(
                {"decision_id": decision["decision_id"], "truth": [decision["truth"]]}
            )
        for deployment, items in by_deployment.items():
            url = f"{self.base}/v2/deployments/{deployment}/feedback"
            self.feedback_results.extend(_http("POST", url, items))


def _share_over_time(routed: list[str], window: int) -> list[dict[str, float]]:
    arms = sorted(set(routed))
    out = []
    for start in range(0, len(routed), window):
        chunk = routed[start : start + window]
        out.append({"decisions": start + len(chunk),
                    **{a: chunk.count(a) / len(chunk) for a in arms}})
    return out


def _accuracy(feedback_results: list[dict]) -> dict[str, dict[str, float]]:
    scored: dict[str, list[float]] = collections.defaultdict(list)
    for result in feedback_results:
        if result["status"] == "accepted":
            for model, reward in result["rewards"].items():
                scored[model].append(reward)
    return {m: {"scored": len(v), "accuracy": float(np.mean(v))} for m, v in sorted(scored.items())}


def wait_explanations(base: str, decisions: list[dict], timeout_s: float) -> dict[str, dict]:
    """Decision id -> final explanation document of each decision, asking
    ``GET /v2/decisions/{id}/explanation`` until it answers 200 (202: still owed); a
    decision still owed after ``timeout_s`` maps to ``{"status": "pending"}``."""
    documents: dict[str, dict] = {}
    deadline = time.monotonic() + timeout_s
    for decision in decisions:
        url = f"{base}/v2/decisions/{decision['decision_id']}/explanation"
        while True:
            request = urllib.request.Request(url)
            with urllib.request.urlopen(request, timeout=30) as reply:
                status, doc = reply.status, json.loads(reply.read())
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        documents[decision["decision_id"]] = doc
    return documents


def _reason_sentences(document: dict) -> list[str]:
    rows = document.get("rows") or [document]
    return [r["sentence"] for row in rows for r in row.get("reasons") or []]


def _refused_example(refusals: list[dict], documents: dict[str, dict]) -> dict | None:
    """The first refused applicant whose explanation gives reasons: its decision, the
    reasons as plain sentences (one to four) and the explainer's one-line summary."""
    for decision in refusals:
        document = documents.get(decision["decision_id"], {})
        sentences = _reason_sentences(document)
        if document.get("status") == "done" and sentences:
            detail = document.get("explanation") or {}
            return {"decision_id": decision["decision_id"],
                    "routed_model": decision["routed_model"],
                    "decision": "refused (predicted bad credit risk)",
                    "reasons": sentences[:4], "summary": detail.get("summary"),
                    "method": document.get("method") or detail.get("method")}
    return None


def explanation_counts(cc: list[dict], documents: dict[str, dict]) -> dict:
    """Refusals of the explained deployment and how many have their explanation, with
    the status of every explanation document."""
    refusals = [d for d in cc if d["label"] == 0]
    statuses = collections.Counter(documents[d["decision_id"]].get("status", "none")
                                   for d in refusals)
    return {"deployment": "credit-cc", "decisions": len(cc), "refusals": len(refusals),
            "refusals_explained": statuses.get("done", 0), "by_status": dict(statuses)}


def _percentiles(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"count": 0}
    return {"count": len(values), "p50_ms": float(np.percentile(values, 50)),
            "p99_ms": float(np.percentile(values, 99))}


def fairness_summary(doc: dict) -> dict:
    """``GET /v2/deployments/{d}/fairness?window=all`` as ``model -> attribute -> group
    -> {decisions, approval_rate, accuracy, tpr, fpr, ...}``, beside each attribute's
    ``disparate_impact``: its lowest ratio over the groups (value, interval, group,
    reference) and every group's."""
    buckets = doc["buckets"]
    out: dict = {}
    for model, attributes in (buckets[-1]["models"] if buckets else {}).items():
        for attribute, figures in attributes.items():
            by_group = {g: f["disparate_impact"] for g, f in figures["fairness"].items()
                        if f["disparate_impact"]["value"] is not None}
            lowest = min(by_group, key=lambda g: by_group[g]["value"], default=None)
            out.setdefault(model, {})[attribute] = {
                **figures["groups"],
                "disparate_impact": {
                    **(by_group[lowest] if lowest else {"value": None}), "group": lowest,
                    "reference": figures["reference"], "by_group": by_group},
            }
    return out


def build_report(replay: Replay, states: dict, documents: dict[str, dict],
                 fairness: dict | None = None) -> dict:
    """The demo's figures, from what the client saw and the gateway's state
    (``documents``: the explanation of each refusal of credit-cc)."""
    bandit = states["credit"]["router"]
    cc = [d for d in replay.decisions if d["deployment"] == "credit-cc"]
    return {
        "requests": len(replay.decisions),
        "feedback": {"sent": len(replay.feedback_results),
                     "accepted": sum(r["status"] == "accepted" for r in replay.feedback_results)},
        "bandit": {
            "traffic": dict(collections.Counter(replay.routed["credit"])),
            "traffic_share_over_time": _share_over_time(replay.routed["credit"], 100),
            "posterior_mean": {a: v.get("mean") for a, v in bandit["arms"].items()},
        },
        "accuracy_by_model": _accuracy(replay.feedback_results),
        "champion_challenger": {
            "champion": states["credit-cc"]["router"]["champion"],
            "rule": states["credit-cc"]["router"].get("promotion"),
            "models": {
                m: {k: v.get(k) for k in ("n", "mean", "p_beats_champion") if k in v}
                for m, v in states["credit-cc"]["router"]["arms"].items()
            },
            "promotions": states["credit-cc"]["router"].get("promotions", []),
            "refusals": states["credit-cc"]["router"].get("refusals", []),
        },
        "fairness": {d: fairness_summary(doc) for d, doc in (fairness or {}).items()},
        "fairness_alerts": {d: doc["alerts"] for d, doc in (fairness or {}).items()},
        "shadow_agreement": states["credit-shadow"]["shadow_agreement"],
        "refused_applicant": _refused_example([d for d in cc if d["label"] == 0], documents),
        "explanations": explanation_counts(cc, documents),
        "latency": {p: _percentiles(v) for p, v in replay.latency_ms.items()},
    }


def _chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = report["bandit"]["traffic_share_over_time"]
    arms = sorted({k for point in series for k in point if k != "decisions"})
    fig, ax = plt.subplots(figsize=(7, 4))
    for arm in arms:
        ax.plot([p["decisions"] for p in series], [p.get(arm, 0.0) for p in series],
                marker="o", label=f"{arm} (posterior mean "
                f"{report['bandit']['posterior_mean'].get(arm, 0):.3f})")
    ax.set_xlabel("decisions of the bandit deployment")
    ax.set_ylabel("traffic share per 100 decisions")
    ax.set_ylim(0, 1)
    ax.set_title("Thompson sampling: traffic share per model")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _print(report: dict) -> None:
    print("\n=== Arbiter demo: German credit ===")
    explained = report["explanations"]
    print(f"requests {report['requests']}, feedback accepted {report['feedback']['accepted']}"
          f" of {report['feedback']['sent']}")
    print(f"explanations on {explained['deployment']}: {explained['refusals']} refusals of "
          f"{explained['decisions']} decisions, {explained['refusals_explained']} explained")
    print("bandit (Thompson) traffic:", report["bandit"]["traffic"])
    print("  posterior mean reward per arm:",
          {k: round(v, 3) for k, v in report["bandit"]["posterior_mean"].items()})
    print("accuracy on scored decisions:",
          {m: f"{v['accuracy']:.3f} (n={v['scored']})"
           for m, v in report["accuracy_by_model"].items()})
    cc = report["champion_challenger"]
    print(f"champion-challenger: champion {cc['champion']}, promotions {len(cc['promotions'])}"
          f" (rule: P(better) >= {cc['rule']['probability']} with >= {cc['rule']['min_samples']}"
          " scored each)")
    for model, info in cc["models"].items():
        evidence = info.get("p_beats_champion")
        extra = "" if evidence is None else f", P(beats champion) = {evidence:.3f}"
        print(f"  {model}: n={info['n']}, posterior mean {info['mean']:.3f}{extra}")
    for promo in cc["promotions"]:
        ev = promo.get("evidence", {})
        print(f"  {promo['previous']} -> {promo['champion']} ({promo['reason']}), "
              f"P(better) = {ev.get('probability', float('nan')):.3f}")
    for refusal in cc.get("refusals", []):
        verdicts = refusal["evidence"]["attributes"]
        print(f"  {refusal['challenger']} not promoted over {refusal['champion']} "
              f"(P(better) = {refusal['probability']:.3f}): fairness guardrail, "
              + "; ".join(f"{a}: {_why(v)}" for a, v in verdicts.items() if not v["allowed"]))
    print("shadow agreement with lr:", json.dumps(report["shadow_agreement"]))
    _print_fairness(report)
    refused = report["refused_applicant"]
    if refused:
        print(f"refused applicant {refused['decision_id']} by {refused['routed_model']}, "
              "principal reasons:")
        for sentence in refused["reasons"]:
            print(f"  - {sentence}")
    rep = report.get("replay")
    if rep:
        print(f"replay of 'always {rep['policy'].split()[-1]}' on {rep['deployment']} "
              f"({rep['n']} logged decisions, ESS {rep['ess']:.0f}; true accuracy "
              f"{rep['true_accuracy']:.3f}):")
        for name, e in rep["estimators"].items():
            print(f"  {name}: {e['value']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}]")
    for protocol, lat in report["latency"].items():
        if lat.get("count"):
            print(f"latency {protocol}: p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms"
                  f" over {lat['count']} requests")


def _why(verdict: dict) -> str:
    if "worse_by" not in verdict:
        return verdict.get("reason", "refused")
    champion, challenger = verdict["champion"], verdict["challenger"]
    return (f"worst group {challenger['worst_group']} at {challenger['distance']:.2f} of "
            f"parity against {champion['distance']:.2f} for the champion")


def _print_fairness(report: dict) -> None:
    """Approval rate and accuracy per group, per model: one line per attribute."""
    for deployment, models in report.get("fairness", {}).items():
        print(f"fairness on {deployment} (approved / accuracy / rows per group; lowest "
              "disparate impact against the reference):")
        for model, attributes in models.items():
            for attribute, figures in attributes.items():
                di = figures["disparate_impact"]
                cells = [f"{g} {_pct(f['approval_rate'])} / {_pct(f['accuracy'])} / "
                         f"{f['decisions']}" for g, f in figures.items()
                         if g != "disparate_impact"]
                lowest = "" if di["value"] is None else (
                    f"; DI {di['value']:.2f} [{di['ci_low']:.2f}, {di['ci_high']:.2f}] "
                    f"{di['group']} vs {di['reference']}")
                print(f"  {model:4} {attribute}: " + ", ".join(cells) + lowest)
        for alert in report.get("fairness_alerts", {}).get(deployment, []):
            print(f"  ALERT {alert['model']} {alert['attribute']}={alert['group']} "
                  f"({alert['window']}): {alert['metric']} {alert['value']:.2f} "
                  f"[{alert['ci_low']:.2f}, {alert['ci_high']:.2f}]")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def replay_always(store: Path, deployment: str, model: str) -> dict:
    """Off-policy estimates of "always ``model``" from the demo's logged decisions
    (``arbiter replay``'s estimators), beside the model's true accuracy on the same
    decisions (known: every model is scored on every champion-challenger decision)."""
    from gateway.replay import evaluate, read_decisions, store_spec
    from routers.specs import RouterSpec

    spec = TypeAdapter(RouterSpec).validate_python(
        {"kind": "weighted", "weights": {model: 100}})
    decisions = asyncio.run(read_decisions(store_spec(str(store)), deployment))
    truth = [d.rewards[model] for d in decisions if d.rewards and model in d.rewards]
    result = evaluate(decisions, deployment, spec)
    return {"deployment": deployment, "policy": f"always {model}", "n": result["n"],
            "ess": result["ess"], "estimators": result["estimators"],
            "true_accuracy": float(np.mean(truth)) if truth else None,
            "warnings": result["warnings"]}


def fairness_charts(store: Path, deployment: str, out: Path) -> None:
    """``arbiter report`` on the demo's store: fairness.json and one chart per attribute
    (its printed summary is dropped: the demo has printed the figures already)."""
    import contextlib
    import io

    from gateway.fairness_report import run_report
    from gateway.replay import store_spec

    with contextlib.redirect_stdout(io.StringIO()):
        run_report(store_spec(str(store)), deployment, out)


def run(out: Path, passes: int, applicants: int, seed: int = 0) -> dict:
    """Run the whole demo; returns the report (also written to ``out``)."""
    models = HERE / "models"
    if not (models / "reference_outcomes.npy").exists():  # absent or trained before it
        from examples.credit.train import train

        train(models, seed)
    out.mkdir(parents=True, exist_ok=True)
    run_file, gateway = write_run_files(models, (out / "run").resolve())
    holdout = pd.read_csv(models / "holdout.csv")
    X = encode_frame(holdout.drop(columns=["creditability"])).astype(np.float32)[:applicants]
    y = (holdout["creditability"] == "good").astype(int).to_numpy()[:applicants]
    up = Up(run_file, out / "arbiter.log", gateway["http_port"])
    try:
        print(f"starting arbiter up (log: {out / 'arbiter.log'}) ...", flush=True)
        up.wait_ready()
        replay = Replay(gateway)
        order = random.Random(seed)
        index = 0
        for p in range(passes):
            rows = list(range(len(X)))
            order.shuffle(rows)
            for i in rows:
                replay.applicant(index, X[i], int(y[i]))
                index += 1
            print(f"pass {p + 1}/{passes}: {index} applicants replayed", flush=True)
        replay.send_due(None)
        base = replay.base
        refusals = [d for d in replay.decisions
                    if d["deployment"] == "credit-cc" and d["label"] == 0]
        print(f"waiting for the explanations of {len(refusals)} refusals ...", flush=True)
        documents = wait_explanations(base, refusals, timeout_s=300)
        states = {d: _http("GET", f"{base}/v2/deployments/{d}") for d in DEPLOYMENTS}
        fairness = {d: _http("GET", f"{base}/v2/deployments/{d}/fairness?window=all")
                    for d in DEPLOYMENTS}
        report = build_report(replay, states, documents, fairness)
        refused = report["refused_applicant"]
        if refused is not None:
            (out / "adverse_action_letter.txt").write_text(
                adverse_action.letter(documents[refused["decision_id"]]))
        try:  # the console's pages, readable after the gateway stops
            from gateway.console.snapshot import write_snapshot

            write_snapshot(base, out / "console")
            print(f"console snapshot: {out / 'console' / 'index.html'}", flush=True)
        except OSError as exc:
            print(f"console snapshot failed: {exc}", flush=True)
    finally:
        code = up.stop()
    report["arbiter_up_exit_code"] = code
    report["replay"] = replay_always(out / "run" / "arbiter.sqlite", "credit-cc", "gbm")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    _chart(report, out / "traffic_share.png")
    _print(report)
    fairness_charts(out / "run" / "arbiter.sqlite", "credit-cc", out / "fairness")
    print(f"\nwrote {out / 'report.json'}, {out / 'traffic_share.png'}, "
          f"{out / 'adverse_action_letter.txt'} and {out / 'fairness'}/fairness_*.png")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--passes", type=int, default=5, help="times the holdout is replayed")
    parser.add_argument("--applicants", type=int, default=200, help="held-out applicants used")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    report = run(args.out, args.passes, args.applicants, args.seed)
    return 0 if report["arbiter_up_exit_code"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
