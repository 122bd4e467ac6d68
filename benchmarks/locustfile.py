"""Locust load test of an Arbiter gateway deployment: does the bandit learn?

Users:
    * :class:`RestUser`: ``POST /v2/models/{deployment}/infer`` (JSON) then feedback over
      ``POST /v2/deployments/{deployment}/feedback``;
    * :class:`GrpcUser`: ``inference.GRPCInferenceService/ModelInfer`` then feedback over
      ``arbiter.DecisionService/Feedback``, each call reported to locust as a request event.

Both pace themselves with ``constant_throughput`` and, for every decision, send a reward
of 1 with the probability :data:`ARM_RATES` gives the routed arm (read from the
response's ``parameters.routed_model``), else 0. The arm of every decision is counted in
5 s buckets; at the end the share of each arm, and of the best arm, per bucket is
written to a CSV (``ARBITER_SHARE_CSV``).

Environment (all optional):
    ARBITER_DEPLOYMENT   deployment name (``credit``)
    ARBITER_GRPC         gateway gRPC ``host:port`` (default: the --host's host, port 8001)
    ARBITER_ARM_RATES    JSON arm -> success rate (``{"lr": 0.6, "gbm": 0.8, "mlp": 0.5}``)
    ARBITER_RPS          requests per second per user (``5``)
    ARBITER_SHARE_CSV    arm-share CSV path (``benchmarks/results/arm_share.csv``)
    ARBITER_BUCKET_S     seconds per share bucket (``5``)

Run: ``locust -f benchmarks/locustfile.py --host http://127.0.0.1:8000`` (or
``python -m benchmarks.loadtest``, which starts everything).
"""

from __future__ import annotations

import csv
import json
import os
import random
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import FastHttpUser, User, constant_throughput, events, task

grpc_gevent.init_gevent()  # grpc's blocking calls must yield to gevent

from protos import arbiter_pb2, arbiter_pb2_grpc  # noqa: E402
from protos import open_inference_pb2 as pb  # noqa: E402
from protos import open_inference_pb2_grpc as pb_grpc  # noqa: E402

DEPLOYMENT = os.environ.get("ARBITER_DEPLOYMENT", "credit")
ARM_RATES: dict[str, float] = json.loads(
    os.environ.get("ARBITER_ARM_RATES", '{"lr": 0.6, "gbm": 0.8, "mlp": 0.5}'))
RPS_PER_USER = float(os.environ.get("ARBITER_RPS", "5"))
SHARE_CSV = Path(os.environ.get(
    "ARBITER_SHARE_CSV", Path(__file__).resolve().parent / "results" / "arm_share.csv"))
BUCKET_S = float(os.environ.get("ARBITER_BUCKET_S", "5"))
BEST_ARM = max(ARM_RATES, key=ARM_RATES.__getitem__)

# one encoded credit row (examples/credit reference.npy[0]), FP32 [1, 20]
ROW = [2.0, 24.0, 3.0, 1.0, 1246.0, 0.0, 0.0, 4.0, 0.0, 2.0, 2.0, 2.0, 23.0, 2.0, 1.0,
       1.0, 3.0, 1.0, 0.0, 1.0]
INFER_BODY = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20],
                          "data": ROW}]}


class ArmShare:
    """Thread-safe count of routed arms per time bucket."""

    def __init__(self, bucket_s: float = BUCKET_S) -> None:
        self.bucket_s = bucket_s
        self.start = time.monotonic()
        self.counts: dict[int, dict[str, int]] = {}
        self._lock = threading.Lock()

    def add(self, arm: str) -> None:
        bucket = int((time.monotonic() - self.start) // self.bucket_s)
        with self._lock:
            row = self.counts.setdefault(bucket, {})
            row[arm] = row.get(arm, 0) + 1

    def rows(self) -> list[dict[str, float]]:
        """Per bucket: start second, decisions, share of each arm and of the best arm."""
        arms = sorted(set(ARM_RATES) | {a for c in self.counts.values() for a in c})
        out = []
        for bucket in sorted(self.counts):
            counts = self.counts[bucket]
            total = sum(counts.values())
            row: dict[str, float] = {"t_start_s": bucket * self.bucket_s, "decisions": total}
            for arm in arms:
                row[f"share_{arm}"] = round(counts.get(arm, 0) / total, 4)
            row["best_arm_share"] = round(counts.get(BEST_ARM, 0) / total, 4)
            out.append(row)
        return out

    def write(self, path: Path) -> None:
        rows = self.rows()
        if not rows:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


SHARE = ArmShare()


def reward_for(arm: str, rng: random.Random) -> float:
    """1.0 with the arm's success rate, else 0.0 (unknown arms: 0.5)."""
    return 1.0 if rng.random() < ARM_RATES.get(arm, 0.5) else 0.0


@events.test_start.add_listener
def _on_start(environment, **_kwargs) -> None:
    SHARE.start = time.monotonic()
    SHARE.counts.clear()


@events.quitting.add_listener
def _on_quit(environment, **_kwargs) -> None:
    SHARE.write(SHARE_CSV)
    rows = SHARE.rows()
    if rows:
        print(f"[locust] best arm {BEST_ARM!r} share: first bucket "
              f"{rows[0]['best_arm_share']:.2f}, last bucket {rows[-1]['best_arm_share']:.2f}"
              f" -> {SHARE_CSV}")


class RestUser(FastHttpUser):
    """Infer over REST, then feedback over REST."""

    wait_time = constant_throughput(RPS_PER_USER)
    weight = 1

    def on_start(self) -> None:
        self.rng = random.Random()

    @task
    def infer_and_feedback(self) -> None:
        with self.client.post(f"/v2/models/{DEPLOYMENT}/infer", json=INFER_BODY,
                              name="rest infer", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")
                return
            params = (resp.json() or {}).get("parameters") or {}
            arm, decision = params.get("routed_model"), params.get("decision_id")
            if not arm or not decision:
                resp.failure("no routed_model / decision_id in parameters")
                return
        SHARE.add(arm)
        self.client.post(f"/v2/deployments/{DEPLOYMENT}/feedback", name="rest feedback",
                         json={"decision_id": decision,
                               "reward": reward_for(arm, self.rng)})


def _grpc_target(host: str | None) -> str:
    if os.environ.get("ARBITER_GRPC"):
        return os.environ["ARBITER_GRPC"]
    return f"{urlsplit(host or 'http://127.0.0.1').hostname}:8001"


class GrpcUser(User):
    """Infer over gRPC, then feedback over ``arbiter.DecisionService``; each RPC fires a
    locust ``request`` event (request_type ``grpc``)."""

    wait_time = constant_throughput(RPS_PER_USER)
    weight = 1

    def __init__(self, environment) -> None:
        super().__init__(environment)
        self.rng = random.Random()
        self.channel = grpc.insecure_channel(_grpc_target(self.host))
        self.infer_stub = pb_grpc.GRPCInferenceServiceStub(self.channel)
        self.decisions = arbiter_pb2_grpc.DecisionServiceStub(self.channel)
        self.request = pb.ModelInferRequest(model_name=DEPLOYMENT)
        tensor = self.request.inputs.add(name="input", datatype="FP32", shape=[1, 20])
        tensor.contents.fp32_contents.extend(ROW)

    def on_stop(self) -> None:
        self.channel.close()

    def _call(self, name: str, fn, request):
        start = time.perf_counter()
        response, exc = None, None
        try:
            response = fn(request, timeout=10)
        except grpc.RpcError as err:
            exc = err
        self.environment.events.request.fire(
            request_type="grpc", name=name, response_time=(time.perf_counter() - start) * 1e3,
            response_length=response.ByteSize() if response is not None else 0,
            response=response, context={}, exception=exc)
        return response

    @task
    def infer_and_feedback(self) -> None:
        resp = self._call("grpc infer", self.infer_stub.ModelInfer, self.request)
        if resp is None:
            return
        params = resp.parameters
        arm = params["routed_model"].string_param if "routed_model" in params else ""
        decision = params["decision_id"].string_param if "decision_id" in params else ""
        if not arm or not decision:
            self.environment.events.request.fire(
                request_type="grpc", name="grpc infer parameters", response_time=0,
                response_length=0, context={},
                exception=ValueError("no routed_model / decision_id in parameters"))
            return
        SHARE.add(arm)
        feedback = arbiter_pb2.FeedbackRequest(deployment=DEPLOYMENT, feedback=[
            arbiter_pb2.Feedback(decision_id=decision, reward=reward_for(arm, self.rng))])
        self._call("grpc feedback", self.decisions.Feedback, feedback)
