"""The lender's sample, ``examples/credit/adverse_action.py``, against a real gateway
with auth: a refusal's letter names the reasons the gateway serves for it; an approval,
a token without ``decisions:read`` and an unknown decision write no letter."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.app import build_gateway
from gateway.config import GatewayConfig
from protos.server.auth import DECISIONS_READ, INFER
from tests.fakes import http_call
from tests.security import Tokens, bearer, write_tokens
from tests.servers import ServerThread, local_options

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Tokens:
    return write_tokens(tmp_path_factory.mktemp("letter-auth"))


@pytest.fixture(scope="module")
def gateway(gbm_pod, credit_models, tokens: Tokens) -> Iterator[ServerThread]:
    """``credit``: the gbm answers, every refusal explained by Tree SHAP with reasons."""
    explain = {"method": "tree_shap", "encoding": str(credit_models["encoding"]),
               "model_artifact": {"gbm": str(credit_models["gbm_sklearn"])},
               "reference_data": str(credit_models["reference"]),
               "reference_outcomes": str(credit_models["reference_outcomes"]),
               "when": "refusals", "adverse": {"output": "label", "values": [0]}}
    config = GatewayConfig.model_validate({
        "models": {"gbm": {"url": f"http://{gbm_pod.http_hostport}", "name": "credit-gbm"}},
        "deployments": {"credit": {"router": {"kind": "weighted", "weights": {"gbm": 1}},
                                   "explain": explain}},
        "store": {"kind": "memory"},
    })
    options = dataclasses.replace(local_options(), auth=tokens.policy())
    with ServerThread(lambda: build_gateway(config, options, 20)[1]) as server:
        yield server


def letter(gateway: ServerThread, decision_id: str, token: str, out: Path):
    return subprocess.run(
        [sys.executable, "-m", "examples.credit.adverse_action", "--gateway",
         gateway.http_url, "--decision", decision_id, "--token", token, "--out", str(out),
         "--lender", "Bank of Tests", "--wait-s", "30"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)


def decisions(gateway: ServerThread, tokens: Tokens, holdout_x) -> dict[int, str]:
    """Label -> the id of one decision with that label."""
    found: dict[int, str] = {}
    for row in holdout_x[:40]:
        doc = _infer(gateway, tokens, row)
        label = next(o["data"][0] for o in doc["outputs"] if o["name"] == "label")
        found.setdefault(label, doc["parameters"]["decision_id"])
    assert set(found) == {0, 1}
    return found


def _infer(gateway: ServerThread, tokens: Tokens, row):
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20],
                        "data": row.tolist()}]}
    status, _, raw = http_call("POST", f"{gateway.http_url}/v2/models/credit/infer",
                                     body, bearer(tokens.by_scope[INFER]))
    assert status == 200, raw
    return json.loads(raw)


def test_letter_names_the_refusals_reasons(gateway, tokens, holdout_x, tmp_path) -> None:
    refused = decisions(gateway, tokens, holdout_x)[0]
    done = letter(gateway, refused, tokens.by_scope[DECISIONS_READ], tmp_path / "letter.txt")
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "letter.txt").read_text()
    status, _, raw = http_call("GET", f"{gateway.http_url}/v2/decisions/{refused}/explanation",
                               None, bearer(tokens.by_scope[DECISIONS_READ]))
    document = json.loads(raw)
    assert status == 200 and document["kind"] == "adverse"
    sentences = [r["sentence"] for r in document["reasons"]]
    assert 1 <= len(sentences) <= 4
    flat = " ".join(text.split())
    for i, sentence in enumerate(sentences, 1):
        assert f"{i}. {sentence}" in flat
    assert refused in flat and text.startswith("Bank of Tests\n")
    assert "unable to approve" in flat


def test_no_letter_for_an_approval_a_wrong_token_or_an_unknown_decision(
        gateway, tokens, holdout_x, tmp_path) -> None:
    approved = decisions(gateway, tokens, holdout_x)[1]
    reader = tokens.by_scope[DECISIONS_READ]
    out = tmp_path / "letter.txt"
    cases = [(approved, reader, 2, "not a refusal"),
             (approved, tokens.by_scope[INFER], 1, "403"),
             ("no-such-decision", reader, 1, "404")]
    for decision_id, token, code, message in cases:
        done = letter(gateway, decision_id, token, out)
        assert done.returncode == code and message in done.stderr, done.stderr
        assert not out.exists()
