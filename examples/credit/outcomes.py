"""Each credit model's correctness on each held-out applicant: the outcomes file of
``arbiter simulate``.

Usage::

    python -m examples.credit.outcomes --models examples/credit/models \\
        --out out/credit-outcomes.csv

The file has a header ``lr,gbm,mlp`` and one row per held-out applicant (200 with the
default split), in ``holdout.csv`` order; a cell is 1 when that model's ``label``
matched the applicant's true outcome (1 repaid, 0 defaulted) and 0 when not. The
models run through the same wrappers as the model pods (``wrappers.loader``), so the
labels are the ones the pods serve. Column means are the held-out accuracies of
``metrics.json``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `examples` and `gateway` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.credit.encoding import load_frame  # noqa: E402
from gateway.simulate import Outcomes, write_outcomes  # noqa: E402
from wrappers.loader import wrapper_from_settings  # noqa: E402
from wrappers.settings import load_settings  # noqa: E402

__all__ = ["MODELS", "credit_outcomes", "main"]

MODELS = ("lr", "gbm", "mlp")
"""The example's model keys, as in ``gateway.yaml``."""


def _labels(settings_path: Path, x: np.ndarray) -> np.ndarray:
    wrapper = wrapper_from_settings(load_settings(settings_path))
    wrapper.load()
    try:
        return np.asarray(wrapper.predict({"input": x})["label"]).reshape(-1)
    finally:
        wrapper.unload()


def credit_outcomes(models_dir: str | Path, models: Sequence[str] = MODELS) -> Outcomes:
    """Rewards ``[applicants, len(models)]``: 1 where the model was right.

    Args:
        models_dir: folder written by ``examples/credit/train.py`` (``<key>.yaml``
            settings, the artifacts and ``holdout.csv``).
        models: model keys to score.

    Raises:
        FileNotFoundError: a settings file or ``holdout.csv`` is missing.
    """
    folder = Path(models_dir)
    x, y = load_frame(folder / "holdout.csv")
    columns = [(_labels(folder / f"{key}.yaml", x) == y).astype(np.float64) for key in models]
    return Outcomes(tuple(models), np.stack(columns, axis=1))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints each model's accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).parent
    parser.add_argument("--models", type=Path, default=here / "models",
                        help="folder of the trained models (examples/credit/train.py)")
    parser.add_argument("--out", type=Path, default=Path("out/credit-outcomes.csv"),
                        help="CSV to write")
    args = parser.parse_args(argv)
    outcomes = credit_outcomes(args.models)
    write_outcomes(outcomes, args.out)
    accuracy = ", ".join(f"{m} {v:.3f}" for m, v in outcomes.means().items())
    print(f"{args.out}: {outcomes.rewards.shape[0]} applicants; accuracy {accuracy}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
