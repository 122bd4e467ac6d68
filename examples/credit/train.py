"""Train the three credit example models, deterministically, in a few seconds.

Usage::

    python examples/credit/train.py --out examples/credit/models [--seed 0]

Writes into ``--out``:

* ``holdout.csv``: the stratified 20 % held-out rows (raw attributes and label);
* ``reference.npy``: the encoded training rows, FP32 ``[800, 20]``, for explainers;
* ``reference_outcomes.npy``: their outcomes, INT64 ``[800]`` (1 = good), so that
  explanations compare an applicant with the repaid loans;
* ``encoding.json``: the input encoding (see :mod:`examples.credit.encoding`);
* ``input_schema.json``: every column's domain, for the gateway's ``input_schema``;
* ``lr.joblib`` + ``lr.yaml``: scikit-learn pipeline, one-hot + scaling + logistic
  regression;
* ``gbm.onnx`` + ``gbm.yaml`` (and ``gbm.joblib``, the fitted sklearn model, for
  tree SHAP): gradient-boosted trees converted with skl2onnx;
* ``mlp.pt`` + ``mlp.yaml``: a small TorchScript MLP with one-hot encoding inside;
* ``metrics.json``: held-out accuracy of each model.

Every model takes ``input`` FP32 ``[-1, 20]`` and returns ``label`` INT64 ``[-1]``
(1 = good) and ``probabilities`` FP32 ``[-1, 2]`` (column 1 = P(good)).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import yaml
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.credit.encoding import (  # noqa: E402
    CATEGORICAL_INDICES,
    CATEGORIES,
    DATA_CSV,
    FEATURE_NAMES,
    NUMERIC_INDICES,
    encode_frame,
    write_encoding,
    write_input_schema,
)

__all__ = ["ARTIFACTS", "IO_SPEC", "artifact_paths", "main", "split", "train"]

ARTIFACTS: dict[str, str] = {
    "lr": "lr.joblib", "lr_settings": "lr.yaml",
    "gbm": "gbm.onnx", "gbm_sklearn": "gbm.joblib", "gbm_settings": "gbm.yaml",
    "mlp": "mlp.pt", "mlp_settings": "mlp.yaml",
    "holdout": "holdout.csv", "reference": "reference.npy",
    "reference_outcomes": "reference_outcomes.npy",
    "encoding": "encoding.json", "input_schema": "input_schema.json", "metrics": "metrics.json",
}
"""Artifact key -> file name inside the output directory."""

N_FEATURES = len(FEATURE_NAMES)
IO_SPEC = {
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, N_FEATURES]}],
    "outputs": [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
    ],
}
"""Inputs and outputs every credit model declares."""


def split(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The fixed stratified 80/20 split of the raw CSV: ``(train, holdout)``."""
    frame = pd.read_csv(DATA_CSV)
    return train_test_split(
        frame, test_size=0.2, stratify=frame["creditability"], random_state=seed
    )


def _xy(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return encode_frame(frame), (frame["creditability"] == "good").to_numpy(np.int64)


def fit_lr(x: np.ndarray, y: np.ndarray) -> Pipeline:
    """One-hot categoricals (by column index) + scaled numerics + logistic regression."""
    categories = [np.arange(len(CATEGORIES[FEATURE_NAMES[i]]), dtype=np.float64)
                  for i in CATEGORICAL_INDICES]
    columns = ColumnTransformer([
        ("categorical", OneHotEncoder(categories=categories, handle_unknown="ignore"),
         CATEGORICAL_INDICES),
        ("numeric", StandardScaler(), NUMERIC_INDICES),
    ])
    model = Pipeline([("columns", columns), ("lr", LogisticRegression(C=0.5, max_iter=1000))])
    return model.fit(x, y)


def fit_gbm(x: np.ndarray, y: np.ndarray, seed: int) -> GradientBoostingClassifier:
    """Gradient-boosted trees on the ordinal encoding (trees need no one-hot)."""
    model = GradientBoostingClassifier(
        n_estimators=150, max_depth=3, learning_rate=0.05, subsample=0.8, random_state=seed
    )
    return model.fit(x, y)


def to_onnx(model: GradientBoostingClassifier) -> bytes:
    """Convert with skl2onnx: outputs exactly ``label`` INT64 and ``probabilities`` FP32."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(
        model,
        initial_types=[("input", FloatTensorType([None, N_FEATURES]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    names = [o.name for o in onx.graph.output]
    if names != ["label", "probabilities"]:
        raise RuntimeError(f"unexpected ONNX outputs {names}")
    return onx.SerializeToString()


def artifact_paths(out_dir: Path) -> dict[str, Path]:
    """Artifact key -> path inside ``out_dir`` (the layout :func:`train` writes)."""
    return {key: Path(out_dir) / name for key, name in ARTIFACTS.items()}


def _write_settings(path: Path, name: str, framework: str, uri: str) -> Path:
    settings = {"name": name, "version": "1", "framework": framework, "uri": uri, **IO_SPEC,
                "max_batch_size": 64, "max_batch_wait_ms": 0}
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return path


def _accuracy(label: np.ndarray, y: np.ndarray) -> float:
    return round(float(np.mean(np.asarray(label).ravel() == y)), 4)


def train(out_dir: Path, seed: int = 0) -> dict[str, Path]:
    """Train and save every artifact (see module docstring) into ``out_dir``.

    Args:
        out_dir: created if needed.
        seed: split, model and torch seed.

    Returns:
        Artifact key -> path: ``lr``, ``lr_settings``, ``gbm``, ``gbm_sklearn``,
        ``gbm_settings``, ``mlp``, ``mlp_settings``, ``holdout``, ``reference``,
        ``reference_outcomes``, ``encoding``, ``input_schema``, ``metrics``.
    """
    from examples.credit import mlp

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_frame, holdout = split(seed)
    x, y = _xy(train_frame)
    x_test, y_test = _xy(holdout)
    paths = {"holdout": out / "holdout.csv", "reference": out / "reference.npy",
             "reference_outcomes": out / "reference_outcomes.npy"}
    holdout.to_csv(paths["holdout"], index=False)
    np.save(paths["reference"], x)
    np.save(paths["reference_outcomes"], y)
    paths["encoding"] = write_encoding(out)
    paths["input_schema"] = write_input_schema(out)

    lr = fit_lr(x, y)
    paths["lr"] = out / "lr.joblib"
    joblib.dump(lr, paths["lr"])
    paths["lr_settings"] = _write_settings(out / "lr.yaml", "credit-lr", "sklearn", "lr.joblib")

    gbm = fit_gbm(x, y, seed)
    paths["gbm_sklearn"] = out / "gbm.joblib"
    joblib.dump(gbm, paths["gbm_sklearn"])
    paths["gbm"] = out / "gbm.onnx"
    paths["gbm"].write_bytes(to_onnx(gbm))
    paths["gbm_settings"] = _write_settings(out / "gbm.yaml", "credit-gbm", "onnx", "gbm.onnx")

    module = mlp.fit_mlp(x, y, seed)
    paths["mlp"] = mlp.save(module, out / "mlp.pt")
    paths["mlp_settings"] = _write_settings(out / "mlp.yaml", "credit-mlp", "torch", "mlp.pt")

    metrics = {
        "lr": _accuracy(lr.predict(x_test), y_test),
        "gbm": _accuracy(gbm.predict(x_test), y_test),
        "mlp": _accuracy(mlp.predict_label(module, x_test), y_test),
        "majority_class": _accuracy(np.ones_like(y_test), y_test),
        "seed": seed, "n_train": int(len(y)), "n_holdout": int(len(y_test)),
    }
    paths["metrics"] = out / "metrics.json"
    paths["metrics"].write_text(json.dumps(metrics, indent=2) + "\n")
    return paths


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints the held-out accuracies."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "models")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--if-missing", action="store_true",
        help="do nothing when every artifact is already in --out",
    )
    args = parser.parse_args(argv)
    if args.if_missing and all(p.exists() for p in artifact_paths(args.out).values()):
        print(f"models already in {args.out}; reusing them")
        return 0
    paths = train(args.out, args.seed)
    print(paths["metrics"].read_text(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
