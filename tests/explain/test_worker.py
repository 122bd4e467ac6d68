"""ExplanationWorker: process pool, queue bound, deadline, sampling, errors, refit, close.

Each worker spawns processes that import Alibi (a few seconds each), so tests that start
a pool are marked slow.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import random
import time

import numpy as np
import psutil
import pytest
from aiohttp import web
from alibi.explainers import AnchorTabular

from explain.client import ModelEndpoint
from explain.predictors import JoblibPredictor
from explain.settings import ExplainSpec
from explain.worker import ExplanationResult, ExplanationWorker

SEED = 5


def make_spec(credit, **kw) -> ExplainSpec:
    base = dict(
        method="anchor_tabular",
        reference_data=credit.reference_path,
        encoding=credit.encoding_path,
        seed=SEED,
        anchor_threshold=0.9,
        timeout_s=60,
    )
    return ExplainSpec(**{**base, **kw})


def pool_pids(worker: ExplanationWorker) -> set[int]:
    pool = worker._pool
    return {p.pid for p in (pool.executor._processes or {}).values()} if pool else set()


def assert_no_children(pids: set[int], within_s: float = 5.0) -> None:
    """No worker process is left (a busy machine may take a moment to reap them)."""
    deadline = time.monotonic() + within_s
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert multiprocessing.active_children() == []
    children = {c.pid for c in psutil.Process().children(recursive=True)}
    assert not (pids & children)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)


def direct_anchor(credit, model, row):
    anchor = AnchorTabular(
        model.predict_proba, credit.schema.feature_names, credit.schema.category_map, seed=SEED
    ).fit(credit.reference)
    np.random.seed(SEED)
    return anchor.explain(row[0], threshold=0.9)


async def test_skips_without_a_pool(credit):
    seen: list[ExplanationResult] = []
    off = ExplanationWorker(
        make_spec(credit, mode="off"),
        {"lr": JoblibPredictor(credit.lr_path)},
        on_result=seen.append,
    )
    unsampled = ExplanationWorker(
        make_spec(credit, sample_rate=0.0),
        {"lr": JoblibPredictor(credit.lr_path)},
        on_result=seen.append,
    )
    first = await (await off.submit("d1", "lr", credit.row(0)))
    second = await (await unsampled.submit("d2", "lr", credit.row(0)))
    sampled = ExplanationWorker(
        make_spec(credit), {"lr": JoblibPredictor(credit.lr_path)}, on_result=seen.append
    )
    unknown = await (await sampled.submit("d3", "nope", credit.row(0)))
    assert (first.status, first.reason) == ("skipped", "off")
    assert (second.status, second.reason) == ("skipped", "not sampled")
    assert (unknown.status, unknown.reason) == ("failed", "unknown model")
    assert unknown.decision_id == "d3"
    assert unsampled.stats.skipped == 1 and unsampled.stats.reasons["skipped/not sampled"] == 1
    assert sampled.stats.failed == 1
    assert seen == [first, second, unknown]
    for worker in (off, unsampled, sampled):
        await worker.close()
    assert unsampled._pool is None
    closed = await (await unsampled.submit("d4", "lr", credit.row(0)))
    assert (closed.status, closed.reason) == ("skipped", "closed")


def test_sampling_uses_injected_rng(credit):
    worker = ExplanationWorker(make_spec(credit, sample_rate=0.3), {}, rng=random.Random(1))
    reasons = [worker._skip_reason("lr") for _ in range(1000)]
    kept = reasons.count(None)
    assert 250 < kept < 350


@pytest.mark.slow
async def test_done_equals_alibi_and_overflow_and_close(credit):
    seen: list[ExplanationResult] = []
    spec = make_spec(credit, max_queue=2, workers=1)
    worker = ExplanationWorker(spec, {"gb": JoblibPredictor(credit.gb_path)}, on_result=seen.append)
    assert await worker.start() == {}
    pids = pool_pids(worker)
    assert len(pids) == 1
    futures = [await worker.submit(f"d{i}", "gb", credit.row(5)) for i in range(4)]
    assert worker.stats.queue_depth == 2
    results = await asyncio.gather(*futures)
    assert [r.status for r in results] == ["done", "done", "skipped", "skipped"]
    assert {r.reason for r in results[2:]} == {"queue full"}
    theirs = direct_anchor(credit, credit.gb, credit.row(5))
    for r in results[:2]:
        assert r.explanation.anchor_features == [int(f) for f in theirs.data["raw"]["feature"]]
        assert r.explanation.precision == theirs.precision
        assert r.explanation.coverage == theirs.coverage
        assert r.latency_s > 0
    assert 'status_of_existing_checking_account = "... < 0 DM"' in results[0].explanation.anchor
    stats = worker.stats
    assert (stats.done, stats.skipped, stats.failed, stats.queue_depth) == (2, 2, 0, 0)
    assert stats.reasons["skipped/queue full"] == 2 and stats.latency_count == 2
    assert sorted(r.decision_id for r in seen) == ["d0", "d1", "d2", "d3"]
    assert results[0].to_dict()["explanation"]["method"] == "anchor_tabular"
    await worker.close()
    assert_no_children(pids)


@pytest.mark.slow
async def test_timeout_error_and_unknown_model(credit):
    predictors = {"gb": JoblibPredictor(credit.gb_path), "bad": JoblibPredictor(credit.bad_path)}
    worker = ExplanationWorker(make_spec(credit, timeout_s=0.005), predictors)
    await worker.start()
    pids = pool_pids(worker)
    late = await (await worker.submit("d1", "gb", credit.row(5)))
    assert (late.status, late.reason) == ("failed", "timeout")
    assert await worker.refit(make_spec(credit, timeout_s=30)) == {}
    assert pool_pids(worker) == pids  # a budget change keeps the fitted processes
    broken = await (await worker.submit("d2", "bad", credit.row(0)))
    assert (broken.status, broken.reason) == ("failed", "explainer error")
    assert "ValueError" in broken.detail and "features" in broken.detail
    unknown = await (await worker.submit("d3", "champion-v9", credit.row(0)))
    assert (unknown.status, unknown.reason) == ("failed", "unknown model")
    fine = await (await worker.submit("d4", "gb", credit.row(0)))
    assert fine.status == "done"
    assert worker.stats.reasons["failed/timeout"] == 1
    assert worker.stats.reasons["failed/explainer error"] == 1
    pids |= pool_pids(worker)
    await worker.close()
    assert_no_children(pids)


@pytest.mark.slow
async def test_refit_to_new_champion_and_close_cancels(credit):
    worker = ExplanationWorker(make_spec(credit), {"gb": JoblibPredictor(credit.gb_path)})
    await worker.start()
    old = pool_pids(worker)
    errors = await worker.refit(predictors={"lr": JoblibPredictor(credit.lr_path)})
    assert errors == {}
    new = pool_pids(worker)
    assert new and not (new & old)
    result = await (await worker.submit("d1", "lr", credit.row(5)))
    assert result.status == "done" and result.explanation.model == "lr"
    gone = await (await worker.submit("d2", "gb", credit.row(5)))
    assert gone.reason == "unknown model"
    pending = await worker.submit("d3", "lr", credit.row(5))
    await worker.close(grace_s=0)
    assert (await pending).reason == "closed"
    assert_no_children(old | new)


@pytest.mark.slow
async def test_tree_shap_in_worker(credit):
    spec = ExplainSpec(
        method="tree_shap",
        encoding=credit.encoding_path,
        model_artifact={"gb": credit.gb_path},
        workers=2,
    )
    worker = ExplanationWorker(spec)
    assert await worker.start() == {}
    assert len(pool_pids(worker)) == 2
    futures = [await worker.submit(f"d{i}", "gb", credit.row(i)) for i in range(4)]
    results = await asyncio.gather(*futures)
    assert [r.status for r in results] == ["done"] * 4
    raw = credit.gb.decision_function(credit.X[800:804])
    for r, expected in zip(results, raw, strict=True):
        total = r.explanation.expected_value + sum(r.explanation.shap_values.values())
        assert total == pytest.approx(expected, abs=1e-5)
    pids = pool_pids(worker)
    await worker.close()
    assert_no_children(pids)


@pytest.mark.slow
async def test_kernel_shap_over_rest(credit):
    """Worker processes call a real OIP REST server; result equals KernelShap direct."""
    from alibi.explainers import KernelShap

    calls = 0

    async def infer(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        body = await request.json()
        tensor = body["inputs"][0]
        X = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        proba = credit.lr.predict_proba(X)
        return web.json_response(
            {
                "model_name": "credit",
                "outputs": [
                    {
                        "name": "probabilities",
                        "datatype": "FP64",
                        "shape": list(proba.shape),
                        "data": proba.ravel().tolist(),
                    }
                ],
            }
        )

    app = web.Application()
    app.router.add_post("/v2/models/credit/infer", infer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    spec = make_spec(credit, method="kernel_shap", kernel_shap_nsamples=64, background_size=20)
    endpoint = ModelEndpoint(f"http://127.0.0.1:{port}", "credit")
    worker = ExplanationWorker(spec, {"lr": endpoint})
    try:
        await worker.start()
        result = await (await worker.submit("d1", "lr", credit.row(2)))
        assert result.status == "done", result
        # background (once), row, shap's row, alibi's row, and shap's batch of 64 x 20
        # rows sent in chunks of at most max_rows_per_call rows
        assert calls <= 4 + math.ceil(64 * 20 / endpoint.max_rows_per_call)
        shap = KernelShap(
            credit.lr.predict_proba,
            feature_names=credit.schema.feature_names,
            categorical_names=credit.schema.category_map,
            seed=SEED,
        )
        shap.fit(credit.reference, summarise_background=True, n_background_samples=20)
        theirs = shap.explain(credit.row(2), nsamples=64, silent=True)
        label = result.explanation.explained_class
        got = [result.explanation.shap_values[n] for n in credit.schema.feature_names]
        np.testing.assert_allclose(got, theirs.shap_values[label][0], atol=1e-6, rtol=0)
    finally:
        pids = pool_pids(worker)
        await worker.close()
        await runner.cleanup()
    assert_no_children(pids)


@pytest.mark.slow
async def test_pending_decisions_are_batched_and_the_loop_never_waits(credit):
    """Decisions submitted together leave in batches of max_batch (Kernel SHAP: one
    model call each); submitting takes microseconds and the event loop keeps ticking
    while the explanations run; the backlog and the oldest pending age are exposed."""
    from explain.kernel import KernelShapExplainer

    now = [100.0]
    spec = make_spec(credit, method="kernel_shap", kernel_shap_nsamples=64, background_size=10,
                     max_batch=8, workers=1)
    worker = ExplanationWorker(spec, {"lr": JoblibPredictor(credit.lr_path)},
                               clock=lambda: now[0])
    assert await worker.start() == {}
    started = time.perf_counter()
    futures = [await worker.submit(f"d{i}", "lr", credit.row(i)) for i in range(9)]
    submit_s = time.perf_counter() - started
    assert (worker.stats.queue_depth, worker.stats.backlog) == (9, 9)
    now[0] += 2.5
    assert worker.stats.oldest_pending_age_s == 2.5
    await asyncio.sleep(0)  # the dispatch: one batch of 8 leaves, one decision waits
    assert (worker.stats.queue_depth, worker.stats.backlog, worker.stats.batches) == (9, 1, 1)
    lags: list[float] = []

    async def ticker() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - before - 0.01)

    tick = asyncio.create_task(ticker())
    results = await asyncio.gather(*futures)
    tick.cancel()
    assert submit_s < 0.05 and lags and max(lags) < 0.1
    assert [r.status for r in results] == ["done"] * 9
    assert worker.stats.batches == 2 and worker.stats.backlog == 0
    assert worker.stats.oldest_pending_age_s == 0.0
    direct = KernelShapExplainer("lr", credit.schema, seed=SEED, nsamples=64, background_size=10)
    direct.fit(credit.reference)
    for i in (0, 8):
        alone = direct.explain(credit.row(i), credit.lr.predict_proba)
        got = results[i].explanation.shap_values
        np.testing.assert_allclose([got[n] for n in credit.schema.feature_names],
                                   [alone.shap_values[n] for n in credit.schema.feature_names],
                                   rtol=0, atol=1e-6)
    pids = pool_pids(worker)
    await worker.close()
    assert_no_children(pids)


@pytest.mark.slow
async def test_one_method_per_model_with_reasons_and_provenance(credit_models):
    """lr by linear_shap, gbm by tree_shap, mlp by kernel_shap, in one worker; each
    result document has the reasons and a provenance record that reproduces it."""
    from examples.credit.encoding import load_frame
    from explain.predictors import TorchScriptPredictor
    from explain.provenance import reproduce

    files = {"encoding": credit_models["encoding"], "reference_data": credit_models["reference"],
             "reference_outcomes": credit_models["reference_outcomes"]}
    spec = ExplainSpec(
        method="kernel_shap", methods={"lr": "linear_shap", "gbm": "tree_shap"},
        model_artifact={"lr": credit_models["lr"], "gbm": credit_models["gbm_sklearn"]},
        kernel_shap_nsamples=64, background_size=10, seed=3, timeout_s=60, **files,
    )
    mlp = TorchScriptPredictor(credit_models["mlp"])
    worker = ExplanationWorker(spec, {"mlp": mlp})
    assert await worker.start() == {}
    rows = load_frame(credit_models["holdout"])[0]
    futures = {m: await worker.submit(f"d-{m}", m, rows[5]) for m in ("lr", "gbm", "mlp")}
    documents = {m: (await f).to_dict() for m, f in futures.items()}
    pids = pool_pids(worker)
    await worker.close()
    assert_no_children(pids)
    units = {"lr": "log-odds", "gbm": "log-odds", "mlp": "probability"}
    for model, doc in documents.items():
        assert doc["status"] == "done" and doc["method"] == spec.method_for(model), doc
        assert doc["latency_s"] > 0 and doc["explanation"]["output_units"] == units[model]
        assert 1 <= len(doc["reasons"]) <= 4
        for reason in doc["reasons"]:
            assert set(reason) == {"feature", "code", "sentence", "contribution", "value"}
            assert reason["contribution"] > 0 and "_" not in reason["sentence"]  # words
        contributions = [r["contribution"] for r in doc["reasons"]]
        assert contributions == sorted(contributions, reverse=True)
        provenance = doc["provenance"]
        assert (provenance["model"], provenance["seed"]) == (model, 3)
        assert provenance["libraries"]["alibi"] == "0.9.4"
        assert provenance["input"] == pytest.approx(rows[5].tolist())
        artifact = spec.model_artifact.get(model)
        again = reproduce(provenance, None if artifact else mlp(), model_artifact=artifact,
                          **files)
        assert again.to_dict()["shap_values"] == pytest.approx(
            doc["explanation"]["shap_values"], abs=1e-6)
        assert [r.feature for r in again.reasons] == [r["feature"] for r in doc["reasons"]]
