"""One Arbiter model wrapper's throughput and p50 / p99 latency, REST and gRPC, at
concurrency 1, 16 and 64, for the ONNX (gbm.onnx) and scikit-learn (lr.joblib) credit
models.

Usage::

    python -m benchmarks.wrapper_bench [--framework onnx,sklearn] [--duration S]
        [--repeats N] [--concurrency 1,16,64] [--quick]

Starts ``arbiter serve-model`` subprocesses on free ports (pinned to the server core),
waits for readiness, checks one response, runs fixed-duration closed-loop loads with the
same generators as :mod:`benchmarks.compare` and stops them. Writes
``benchmarks/results/wrapper_bench-<stamp>.{json,md}``.
"""

from __future__ import annotations

import signal

from benchmarks import compare

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = compare._parser(__doc__)
    parser.set_defaults(targets="")
    parser.add_argument("--framework", default="onnx,sklearn",
                        help="comma list of onnx, sklearn")
    args = parser.parse_args(argv)
    frameworks = [f for f in args.framework.split(",") if f]
    if bad := set(frameworks) - {"onnx", "sklearn"}:
        parser.error(f"unknown framework(s) {sorted(bad)}")
    args.targets = ",".join(f"arbiter-{f}" for f in frameworks)
    signal.signal(signal.SIGTERM, compare._sigterm)
    doc = compare.run(compare.options_from_args(args, "wrapper_bench"))
    print()
    print(compare.markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
