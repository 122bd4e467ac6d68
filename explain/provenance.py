"""Provenance of an explanation: everything needed to compute it again, and a check.

Every explanation carries a record (plain JSON)::

    {"explainer": "explain.kernel.KernelShapExplainer", "method": "kernel_shap",
     "libraries": {"alibi": "0.9.4", "shap": "0.42.1", "numpy": "1.26.4", ...},
     "seed": 0, "model": "mlp", "model_version": "1" | null, "model_sha256": ... | null,
     "reference_sha256": ..., "reference_rows": 800, "outcomes_sha256": ... | null,
     "encoding_sha256": ..., "settings": {ExplainSpec fields of the method},
     "parameters": {the explainer's own view of them}, "input": [the encoded row]}

Hashes are SHA-256 in hex: of the reference rows as little-endian float32 in row-major
order (whatever file held them), of the outcomes as little-endian int64, of the schema as
sorted-key JSON, and of a local model file's bytes. :func:`spec_from` rebuilds the
``ExplainSpec`` from a record and files, refusing files whose hashes differ, and
:func:`reproduce` computes the explanation again (same numbers, for a model that gives
the same outputs).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from explain.base import Explainer, Explanation, FeatureSchema, PredictFn
from explain.settings import LOCAL_METHODS, ExplainSpec

__all__ = [
    "ProvenanceError",
    "LIBRARIES",
    "library_versions",
    "array_sha256",
    "file_sha256",
    "schema_sha256",
    "provenance_record",
    "spec_from",
    "reproduce",
]

LIBRARIES = ("alibi", "shap", "numpy", "scikit-learn", "torch")
"""Distributions whose versions are recorded (those installed)."""


class ProvenanceError(ValueError):
    """A provenance record does not match the files given to reproduce it."""


def library_versions() -> dict[str, str]:
    """Installed version of each of :data:`LIBRARIES` (absent ones are left out)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def array_sha256(array: np.ndarray, dtype: str = "<f4") -> str:
    """SHA-256 of ``array`` as ``dtype`` in row-major order."""
    return hashlib.sha256(np.ascontiguousarray(array, dtype=dtype).tobytes()).hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def schema_sha256(schema: FeatureSchema) -> str:
    """SHA-256 of the schema (names, categories, wording) as sorted-key JSON."""
    options = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
    return hashlib.sha256(orjson.dumps(asdict(schema), option=options)).hexdigest()


def provenance_record(
    spec: ExplainSpec,
    model: str,
    explainer: Explainer,
    *,
    reference: np.ndarray,
    outcomes: np.ndarray | None,
    schema: FeatureSchema,
    model_version: str | None = None,
    model_sha256: str | None = None,
) -> dict[str, Any]:
    """The record shared by every explanation of ``model`` (without ``input``).

    Args:
        spec: the settings the explainer was built from.
        model: the model key.
        explainer: the fitted explainer.
        reference: the reference rows it was fitted on (may have no rows).
        outcomes: the reference outcomes, or ``None``.
        schema: the schema it speaks with.
        model_version: the remote model's version, when known.
        model_sha256: hash of the local model file, when there is one.
    """
    from explain.registry import METHOD_SETTINGS

    method = spec.method_for(model)
    settings = spec.model_dump(mode="json", include={*METHOD_SETTINGS[method], "reasons_top_k",
                                                      "adverse"})
    return {
        "explainer": f"{type(explainer).__module__}.{type(explainer).__qualname__}",
        "method": method,
        "libraries": library_versions(),
        "seed": spec.seed,
        "model": model,
        "model_version": model_version,
        "model_sha256": model_sha256,
        "reference_sha256": array_sha256(reference) if len(reference) else None,
        "reference_rows": int(len(reference)),
        "outcomes_sha256": array_sha256(outcomes, "<i8") if outcomes is not None else None,
        "encoding_sha256": schema_sha256(schema),
        "settings": settings,
        "parameters": explainer.parameters(),
    }


def spec_from(
    record: dict[str, Any],
    *,
    encoding: Path,
    reference_data: Path | None = None,
    reference_outcomes: Path | None = None,
    model_artifact: Path | None = None,
) -> ExplainSpec:
    """The settings that produced ``record``, with the given files, checked against it.

    Args:
        record: an explanation's ``provenance``.
        encoding: the encoding.json it spoke with.
        reference_data: the reference rows (methods other than tree_shap).
        reference_outcomes: the reference outcomes, if the record has them.
        model_artifact: the local model file (tree_shap, linear_shap).

    Raises:
        ProvenanceError: a file's hash differs from the record's, or one is missing.
    """
    method, model = record["method"], record["model"]
    artifacts = {model: model_artifact} if model_artifact is not None else {}
    try:
        spec = ExplainSpec(
            method=method, seed=record["seed"], encoding=encoding,
            reference_data=reference_data, reference_outcomes=reference_outcomes,
            model_artifact=artifacts, **record["settings"],
        )
    except ValueError as exc:
        raise ProvenanceError(f"cannot rebuild the settings: {exc}") from exc
    _check(record, "encoding_sha256", schema_sha256(spec.schema()))
    if reference_data is not None:
        _check(record, "reference_sha256", array_sha256(spec.load_reference()))
    elif record.get("reference_sha256"):
        raise ProvenanceError("the record was made with reference data; give reference_data")
    outcomes = spec.load_outcomes()
    _check(record, "outcomes_sha256",
           array_sha256(outcomes, "<i8") if outcomes is not None else None)
    if method in LOCAL_METHODS:
        _check(record, "model_sha256", file_sha256(model_artifact) if model_artifact else None)
    return spec


def reproduce(
    record: dict[str, Any], predict_fn: PredictFn | None = None, **files: Path | None
) -> Explanation:
    """Compute the explanation of ``record`` again.

    Args:
        record: an explanation's ``provenance`` (with its ``input``).
        predict_fn: the model's batch prediction (methods that call the model).
        **files: as :func:`spec_from`.

    Raises:
        ProvenanceError: as :func:`spec_from`.
        ExplainerError: as the explainer's ``explain``.
    """
    from explain.registry import explainer_for, reason_writer

    spec = spec_from(record, **files)
    schema = spec.schema()
    n = len(schema.feature_names)
    reference = spec.load_reference() if spec.reference_data else np.zeros((0, n), np.float32)
    explainer = explainer_for(spec, record["model"], schema,
                              reason_writer(spec, schema, reference, spec.load_outcomes()))
    explainer.fit(reference)
    row = np.asarray(record["input"], dtype=np.float32).reshape(1, -1)
    return explainer.explain(row, predict_fn)


def _check(record: dict[str, Any], key: str, actual: str | None) -> None:
    if record.get(key) != actual:
        raise ProvenanceError(f"{key} differs: the record has {record.get(key)}, the file {actual}")
