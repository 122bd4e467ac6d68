"""What the store and worker benchmarks write with their numbers: the machine, medians
of repeated samples, an fsync probe of the disk, and the result files.
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["affinity", "fsync_us", "machine", "medians", "write_results"]


def machine() -> dict[str, Any]:
    """CPU model, usable cores, kernel, Python and SQLite versions, 1-minute load."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f
                          if ln.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu": model, "usable_cores": len(os.sched_getaffinity(0)),
            "kernel": platform.release(), "python": sys.version.split()[0],
            "sqlite": sqlite3.sqlite_version, "loadavg_1m": os.getloadavg()[0],
            "date": time.strftime("%Y-%m-%d")}


def fsync_us(folder: Path, count: int = 200) -> float:
    """Median time (microseconds) of writing 4 KiB and ``fsync`` in ``folder``: what
    one durable commit costs at least on this disk."""
    folder.mkdir(parents=True, exist_ok=True)
    times = []
    with tempfile.NamedTemporaryFile(dir=folder) as f:
        block = os.urandom(4096)
        for _ in range(count):
            t0 = time.perf_counter()
            f.write(block)
            f.flush()
            os.fsync(f.fileno())
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def medians(samples: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, float]:
    """The median over ``samples`` of each key (NaN when there is no sample)."""
    out = {}
    for key in keys:
        values = [float(s[key]) for s in samples if s.get(key) is not None]
        out[key] = statistics.median(values) if values else float("nan")
    return out


@contextmanager
def affinity(cpus: frozenset[int] | None) -> Iterator[None]:
    """Run the block (and the processes and threads it starts) on ``cpus``."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def write_results(doc: dict[str, Any], md: str, name: str, folder: Path) -> Path:
    """``<name>-<stamp>.{json,md}`` and ``<name>-latest.{json,md}`` in ``folder``;
    returns the latest JSON path."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = json.dumps(doc, indent=2, default=str)
    for stem in (f"{name}-{stamp}", f"{name}-latest"):
        (folder / f"{stem}.json").write_text(text)
        (folder / f"{stem}.md").write_text(md)
    print(f"[bench] wrote {folder / (name + '-' + stamp)}.{{json,md}}", flush=True)
    return folder / f"{name}-latest.json"
