"""Profile one server under load with py-spy and print its top frames.

Usage::

    python -m benchmarks.profile --target arbiter-onnx --transport grpc --concurrency 16
        [--duration 10] [--process gateway]

Starts the target (as :mod:`benchmarks.compare` does, pinned the same way), runs the
closed-loop load for ``--duration`` seconds while ``py-spy record`` samples the server
process (for gateway targets, ``--process gateway`` or a wrapper), and writes
``benchmarks/results/profile-<target>-<transport>-c<N>.{txt,svg}``: the top functions by
self and by inclusive share of the non-idle samples, and a flame graph.
Uses ``py-spy`` from the PATH, this venv, or ``.cache/profile-venv`` (created with py-spy
on first use, so the project's venv stays as ``pyproject.toml`` says).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from benchmarks import compare
from benchmarks.harness import CACHE, RESULTS, check_once, cores, ensure_tools, run_load

_LINE = re.compile(r":\d+\)$")


def summarize(raw: str, top: int = 25) -> str:
    """Top functions by self and inclusive share, from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_LINE.sub(")", f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith("process ") and
                  not f.startswith("thread ")]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            incl[frame] += n
    out = [f"{total} non-idle samples", "", "top self:"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(top)]
    out += ["", "top inclusive:"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in incl.most_common(top)]
    return "\n".join(out)


def _pyspy() -> str:
    """The py-spy executable: on the PATH, beside this interpreter, or in a venv of its
    own under ``.cache/profile-venv`` (made on first use)."""
    for found in (shutil.which("py-spy"), str(Path(sys.executable).parent / "py-spy"),
                  str(CACHE / "profile-venv" / "bin" / "py-spy")):
        if found and Path(found).exists():
            return found
    venv = CACHE / "profile-venv"
    print(f"[profile] installing py-spy into {venv} (one-off) ...", flush=True)
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "py-spy"],
                   check=True)
    return str(venv / "bin" / "py-spy")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", required=True, choices=compare.ALL_TARGETS)
    p.add_argument("--transport", default="rest", choices=["rest", "grpc"])
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--process", default=None,
                   help="which process of the target to sample (default: the last started)")
    p.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    p.add_argument("--models", type=Path, default=None)
    args = p.parse_args(argv)
    pyspy = _pyspy()
    opts = compare.Options(targets=[args.target], transports=[args.transport],
                           models=args.models)
    pinning = cores()
    tools = ensure_tools(install=True)
    models = opts.models or compare.ensure_models()
    built = compare._build_targets(opts, models, pinning.server)
    stem = RESULTS / (f"profile-{args.target}-{args.transport}-c{args.concurrency}"
                      + ("-native" if args.native else ""))
    RESULTS.mkdir(parents=True, exist_ok=True)
    try:
        for target in built:
            target.start()
        target = next(t for t in built if t.name == args.target)
        ep = next(e for e in target.endpoints if e.transport == args.transport)
        check_once(ep)
        procs = {pr.name: pr for t in built for pr in t.processes}
        proc = procs[args.process] if args.process else target.processes[-1]
        run_load(ep, args.concurrency, 1.0, tools=tools, cpus=pinning.generator)  # warm-up
        result: dict = {}
        loader = threading.Thread(target=lambda: result.update(r=run_load(
            ep, args.concurrency, args.duration + 2, tools=tools, cpus=pinning.generator)))
        loader.start()
        raw = stem.with_suffix(".raw")
        for fmt, path in (("raw", raw), ("flamegraph", stem.with_suffix(".svg"))):
            subprocess.run([pyspy, "record", "--pid", str(proc.pid), "--duration",
                            str(max(1, int(args.duration / 2))), "--rate", "200",
                            "--format", fmt, "--output", str(path),
                            *(["--native"] if args.native else ["--nonblocking"])],
                           check=True, capture_output=True)
        loader.join()
    finally:
        for target in reversed(built):
            target.stop()
    r = result["r"]
    text = (f"{args.target} {args.transport} c={args.concurrency}, process {proc.name}: "
            f"{r.rps:.0f} req/s p50 {r.p50_ms:.2f} ms p99 {r.p99_ms:.2f} ms "
            f"(while sampled)\n" + summarize(raw.read_text()))
    stem.with_suffix(".txt").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
