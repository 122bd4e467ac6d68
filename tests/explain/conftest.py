"""Shared fixtures of the explain tests: small real credit models fitted once per session.

The German credit data's 13 categorical columns are encoded as the integer code of the
category in sorted order; all 20 columns are float32. Rows 0..799 are the reference
(training) rows, rows 800.. are the decisions explained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import orjson
import pandas as pd
import pytest
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from explain.base import FeatureSchema

DATA = Path(__file__).resolve().parents[2] / "examples" / "credit" / "data" / "german_credit.csv"
N_REFERENCE = 800


@dataclass(frozen=True)
class Credit:
    X: np.ndarray
    y: np.ndarray
    schema: FeatureSchema
    gb: GradientBoostingClassifier
    lr: LogisticRegression
    gb_path: Path
    lr_path: Path
    bad_path: Path
    reference_path: Path
    encoding_path: Path

    @property
    def reference(self) -> np.ndarray:
        return self.X[:N_REFERENCE]

    def row(self, i: int) -> np.ndarray:
        """Decision row ``i`` (0-based among the non-reference rows), shape [1, 20]."""
        return self.X[N_REFERENCE + i : N_REFERENCE + i + 1]


def _encode(frame: pd.DataFrame) -> tuple[np.ndarray, list[str], dict[int, list[str]]]:
    names = list(frame.columns)
    category_map: dict[int, list[str]] = {}
    X = np.zeros(frame.shape, dtype=np.float32)
    for i, name in enumerate(names):
        column = frame[name]
        if column.dtype == object:
            categories = sorted(column.unique())
            category_map[i] = categories
            X[:, i] = pd.Categorical(column, categories=categories).codes
        else:
            X[:, i] = column.to_numpy()
    return X, names, category_map


@pytest.fixture(scope="session")
def credit(tmp_path_factory: pytest.TempPathFactory) -> Credit:
    frame = pd.read_csv(DATA)
    classes = sorted(frame["creditability"].unique())  # ["bad", "good"]
    y = (frame.pop("creditability") == classes[1]).to_numpy().astype(int)
    X, names, category_map = _encode(frame)
    schema = FeatureSchema(names, category_map, classes)
    ref_X, ref_y = X[:N_REFERENCE], y[:N_REFERENCE]
    gb = GradientBoostingClassifier(n_estimators=40, max_depth=3, random_state=0).fit(ref_X, ref_y)
    lr = LogisticRegression(max_iter=3000).fit(ref_X, ref_y)
    bad = LogisticRegression(max_iter=500).fit(ref_X[:, :5], ref_y)  # expects 5 columns
    out = tmp_path_factory.mktemp("credit")
    paths = {name: out / f"{name}.joblib" for name in ("gb", "lr", "bad")}
    for name, model in (("gb", gb), ("lr", lr), ("bad", bad)):
        joblib.dump(model, paths[name])
    np.save(out / "reference.npy", ref_X)
    encoding = {
        "feature_names": names,
        "categorical": {str(k): v for k, v in category_map.items()},
        "class_names": classes,
    }
    (out / "encoding.json").write_bytes(orjson.dumps(encoding))
    return Credit(
        X,
        y,
        schema,
        gb,
        lr,
        paths["gb"],
        paths["lr"],
        paths["bad"],
        out / "reference.npy",
        out / "encoding.json",
    )
