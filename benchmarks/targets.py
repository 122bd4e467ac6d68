"""The servers the benchmarks compare, each as a :class:`Target`: the processes to start
and the endpoints (REST / gRPC) to load, with the expected output of the credit row.

* ``arbiter-onnx`` / ``arbiter-sklearn``: ``arbiter serve-model`` with the settings file
  ``examples/credit/train.py`` writes (so batching is as shipped);
* ``gateway-single`` / ``gateway-thompson``: ``arbiter gateway`` in front of the wrappers
  (deployment ``single`` routes everything to the ONNX wrapper; ``credit`` is a three-arm
  Thompson router over lr, gbm and mlp), upstreams over gRPC;
* ``mlserver-sklearn``: MLServer 1.7.1 serving the same ``lr.joblib``, from its own venv
  under ``.cache/mlserver-venv`` (created on first use);
* ``arbiter-sklearn-plain`` / ``mlserver-sklearn-plain``: both serving
  ``lr-plain.joblib``, a one-step ``LogisticRegression`` on the 20 encoded columns (no
  pipeline), the kind of model MLServer's published figures use; made by
  :func:`ensure_plain_lr`;
* ``floor``: :mod:`benchmarks.floor`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from benchmarks.harness import (
    CACHE,
    REPO,
    Endpoint,
    Payload,
    ServerProcess,
    expect_probs,
    free_port,
)

__all__ = ["Target", "Reference", "arbiter_wrapper", "floor", "mlserver", "gateway",
           "ensure_mlserver", "ensure_plain_lr", "plain_reference", "MLSERVER_PINS"]

ARBITER = [sys.executable, "-m", "gateway.cli"]
MLSERVER_PINS = ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.22", "numpy<2"]


@dataclass(slots=True)
class Target:
    """A server under test: its processes and its endpoints."""

    name: str
    processes: list[ServerProcess]
    endpoints: list[Endpoint] = field(default_factory=list)
    notes: str = ""
    workdir: Path | None = None  # removed by stop()

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.proc is not None]

    def start(self) -> None:
        for proc in self.processes:  # in order: upstream wrappers before the gateway
            if proc.proc is None:
                proc.start()
                proc.wait_ready()

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class Reference:
    """Expected P(bad), P(good) of the payload row for each credit model."""

    gbm: np.ndarray
    lr: np.ndarray

    @classmethod
    def compute(cls, models: Path, payload: Payload) -> Reference:
        import joblib
        import onnxruntime as ort

        x = payload.row.reshape(1, 20)
        session = ort.InferenceSession(str(models / "gbm.onnx"),
                                       providers=["CPUExecutionProvider"])
        gbm = session.run(["probabilities"], {"input": x})[0][0]
        lr = joblib.load(models / "lr.joblib").predict_proba(x)[0]
        return cls(np.asarray(gbm, np.float64), np.asarray(lr, np.float64))


def _endpoints(target: Target, http: int, grpc: int | None, model: str, payload: Payload,
               validate, outputs: Sequence[str] = ()) -> None:
    target.endpoints.append(Endpoint(
        target.name, "rest", f"http://127.0.0.1:{http}/v2/models/{model}/infer",
        payload.json_body(outputs), validate, target.pids))
    if grpc is not None:
        target.endpoints.append(Endpoint(
            target.name, "grpc", f"127.0.0.1:{grpc}", payload.grpc_body(model, outputs),
            validate, target.pids))


def _wrapper_process(key: str, models: Path, cpus) -> tuple[ServerProcess, int, int]:
    http, grpc = free_port(), free_port()
    framework, artifact = {"gbm": ("onnx", "gbm.onnx"), "lr": ("sklearn", "lr.joblib"),
                           "mlp": ("torch", "mlp.pt"),
                           "lr-plain": ("sklearn", "lr-plain.joblib")}[key]
    argv = [*ARBITER, "serve-model", "--framework", framework, "--model",
            str(models / artifact), "--settings", str(models / f"{key}.yaml"),
            "--host", "127.0.0.1", "--http-port", str(http), "--grpc-port", str(grpc),
            "--log-level", "WARNING"]
    proc = ServerProcess(f"arbiter-{key}", argv, f"http://127.0.0.1:{http}/v2/health/ready",
                         cpus=cpus, cwd=REPO)
    proc.grpc_port = grpc  # type: ignore[attr-defined]
    proc.http_port = http  # type: ignore[attr-defined]
    return proc, http, grpc


def arbiter_wrapper(framework: str, models: Path, payload: Payload, ref: Reference,
                    cpus) -> Target:
    """``arbiter serve-model`` for ``onnx`` (gbm.onnx), ``sklearn`` (lr.joblib) or
    ``sklearn-plain`` (lr-plain.joblib)."""
    key = {"onnx": "gbm", "sklearn": "lr", "sklearn-plain": "lr-plain"}[framework]
    if key == "lr-plain":
        ensure_plain_lr(models)
    proc, http, grpc = _wrapper_process(key, models, cpus)
    target = Target(f"arbiter-{framework}", [proc])
    expected = {"gbm": ref.gbm, "lr": ref.lr}.get(key)
    if expected is None:
        expected = plain_reference(models, payload)
    _endpoints(target, http, grpc, f"credit-{key}", payload,
               expect_probs("probabilities", [expected], ["label"]))
    return target


def floor(models: Path, payload: Payload, ref: Reference, cpus) -> Target:
    """The minimal aiohttp + onnxruntime handler (REST only)."""
    http = free_port()
    argv = [sys.executable, "-m", "benchmarks.floor", "--model", str(models / "gbm.onnx"),
            "--name", "credit-gbm", "--port", str(http)]
    proc = ServerProcess("floor", argv, f"http://127.0.0.1:{http}/v2/health/ready",
                         cpus=cpus, cwd=REPO)
    target = Target("floor", [proc])
    _endpoints(target, http, None, "credit-gbm", payload,
               expect_probs("probabilities", [ref.gbm], ["label"]))
    return target


# ------------------------------------------------------------- one-step scikit-learn
def ensure_plain_lr(models: Path) -> Path:
    """``lr-plain.joblib`` (and ``lr-plain.yaml``, the settings of ``lr.yaml`` renamed):
    a one-step ``LogisticRegression`` fitted on ``reference.npy`` to the labels the
    credit ``lr`` pipeline gives those rows. Made once, beside the other models."""
    import joblib
    import yaml
    from sklearn.linear_model import LogisticRegression

    path = models / "lr-plain.joblib"
    if not path.exists():
        x = np.load(models / "reference.npy")
        labels = joblib.load(models / "lr.joblib").predict(x)
        joblib.dump(LogisticRegression(max_iter=1000).fit(x, labels), path)
    settings = yaml.safe_load((models / "lr.yaml").read_text())
    settings.update(name="credit-lr-plain", uri="lr-plain.joblib")
    (models / "lr-plain.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return path


def plain_reference(models: Path, payload: Payload) -> np.ndarray:
    """P(bad), P(good) of the payload row by ``lr-plain.joblib``."""
    import joblib

    model = joblib.load(ensure_plain_lr(models))
    return np.asarray(model.predict_proba(payload.row.reshape(1, 20))[0], np.float64)


# -------------------------------------------------------------------------- MLServer
def ensure_mlserver(venv: Path | None = None) -> Path:
    """The ``mlserver`` executable of a venv holding :data:`MLSERVER_PINS` (and this venv's
    scikit-learn version, so the joblib file unpickles as trained); created on first use."""
    venv = venv or CACHE / "mlserver-venv"
    exe = venv / "bin" / "mlserver"
    sklearn = f"scikit-learn=={metadata.version('scikit-learn')}"
    pins = [*MLSERVER_PINS, sklearn]
    marker = venv / "bench-pins.txt"
    if exe.exists() and marker.exists() and marker.read_text().split() == pins:
        return exe
    print(f"[bench] installing {' '.join(pins)} into {venv} (one-off, ~1-2 min) ...",
          flush=True)
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q", *pins],
                   check=True)
    marker.write_text("\n".join(pins))
    return exe


def mlserver(models: Path, payload: Payload, ref: Reference, cpus, *,
             parallel_workers: int | None = None, plain: bool = False) -> Target:
    """MLServer 1.7.1 + mlserver-sklearn serving ``lr.joblib`` (``plain``:
    ``lr-plain.joblib``); the request asks for ``predict`` and ``predict_proba`` (the
    label and probabilities Arbiter returns)."""
    exe = ensure_mlserver()
    artifact = "lr-plain.joblib" if plain else "lr.joblib"
    if plain:
        ensure_plain_lr(models)
    root = CACHE / f"bench-mlserver{'-plain' if plain else ''}-{os.getpid()}"
    model_dir = root / "credit-lr"
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib_path = model_dir / "lr.joblib"
    if not joblib_path.exists():
        joblib_path.symlink_to((models / artifact).resolve())
    http, grpc, metrics = free_port(), free_port(), free_port()
    settings = {"host": "127.0.0.1", "http_port": http, "grpc_port": grpc,
                "metrics_port": metrics}
    if parallel_workers is not None:
        settings["parallel_workers"] = parallel_workers
    (root / "settings.json").write_text(json.dumps(settings))
    (model_dir / "model-settings.json").write_text(json.dumps({
        "name": "credit-lr", "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./lr.joblib", "version": "1"}}))
    proc = ServerProcess("mlserver", [str(exe), "start", str(root)],
                         f"http://127.0.0.1:{http}/v2/health/ready", cpus=cpus, cwd=root)
    notes = ("default settings" if parallel_workers is None
             else f"parallel_workers={parallel_workers}")
    name = "mlserver-sklearn-plain" if plain else "mlserver-sklearn"
    target = Target(name, [proc], notes=notes, workdir=root)
    expected = plain_reference(models, payload) if plain else ref.lr
    _endpoints(target, http, grpc, "credit-lr", payload,
               expect_probs("predict_proba", [expected], ["predict"]),
               outputs=("predict", "predict_proba"))
    return target


# --------------------------------------------------------------------------- gateway
def gateway_available() -> bool:
    return (REPO / "gateway" / "app.py").exists()


def gateway(models: Path, payload: Payload, ref: Reference, cpus, *,
            wrappers: dict[str, ServerProcess] | None = None,
            work: Path | None = None, upstream: str = "grpc") -> list[Target]:
    """The gateway in front of the gbm, lr and mlp wrappers: targets ``gateway-single``
    (deployment ``single``, all to gbm) and ``gateway-thompson`` (deployment ``credit``).

    Args:
        wrappers: wrappers already built by key (``gbm``, ``lr``), from
            :func:`arbiter_wrapper`; the missing ones are started as part of the targets.
        upstream: how the gateway calls the wrappers, ``grpc`` or ``http``.
    """
    wrappers = dict(wrappers or {})
    owned: list[ServerProcess] = []
    for key in ("gbm", "lr", "mlp"):
        if key not in wrappers:
            proc, _, _ = _wrapper_process(key, models, cpus)
            wrappers[key] = proc
            owned.append(proc)
    owned_work = work is None
    work = work or CACHE / f"bench-gateway-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    config = work / "gateway.yaml"
    lines = ["models:"]
    for key in ("gbm", "lr", "mlp"):
        port = wrappers[key].grpc_port if upstream == "grpc" else wrappers[key].http_port
        lines.append(f"  {key}: {{url: '{upstream}://127.0.0.1:{port}', name: credit-{key}}}")
    lines += ["deployments:",
              "  single: {router: {kind: weighted, weights: {gbm: 1}}}",
              "  credit: {router: {kind: thompson, arms: [lr, gbm, mlp]}}"]
    config.write_text("\n".join(lines) + "\n")
    http, grpc = free_port(), free_port()
    proc = ServerProcess("gateway", [*ARBITER, "gateway", "--config", str(config),
                                     "--host", "127.0.0.1", "--http-port", str(http),
                                     "--grpc-port", str(grpc), "--log-level", "WARNING"],
                         f"http://127.0.0.1:{http}/v2/health/ready", cpus=cpus, cwd=work)
    pods = [wrappers[k] for k in ("gbm", "lr", "mlp")]
    note = f"upstream {upstream}"
    single = Target("gateway-single", [*owned, proc], notes=note)
    thompson = Target("gateway-thompson", [*owned, proc], notes=note,
                      workdir=work if owned_work else None)
    # CPU and RSS: the gateway plus the wrappers it calls
    single_pids = lambda: [p.pid for p in (proc, pods[0]) if p.proc]  # noqa: E731
    all_pids = lambda: [p.pid for p in (proc, *pods) if p.proc]  # noqa: E731
    _endpoints(single, http, grpc, "single", payload,
               expect_probs("probabilities", [ref.gbm], ["label"]))
    _endpoints(thompson, http, grpc, "credit", payload,
               expect_probs("probabilities", None, ["label"]))
    for ep in single.endpoints:
        ep.pids = single_pids
    for ep in thompson.endpoints:
        ep.pids = all_pids
    return [single, thompson]
