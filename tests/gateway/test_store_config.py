"""Which store a gateway uses, said and checked at startup: ambiguous ``store:`` blocks
are refused naming the field, a config without one follows ``ARBITER_STORE_DSN`` and
says so, the store in use is logged with its password masked, and a store that cannot
be opened (unreachable PostgreSQL, read-only SQLite) ends ``arbiter gateway`` with one
line naming the path or host and the cause, and status 1."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gateway.config import DSN_ENV, ConfigError, StoreSpec, load_config
from tests.gateway.processes import ROOT, GatewayProcess, free_port, write_config

MODELS = {"lr": {"url": "grpc://127.0.0.1:1", "name": "credit-lr"}}
DEPLOYMENTS = {"plain": {"router": {"kind": "weighted", "weights": {"lr": 1}}}}


def _config(tmp_path: Path, store: dict | None) -> Path:
    doc = {"models": MODELS, "deployments": DEPLOYMENTS}
    if store is not None:
        doc["store"] = store
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(("store", "env", "field", "words"), [
    ({"path": "decisions.sqlite"}, None, "store", "'kind' is missing"),
    ({}, None, "store", "'kind' is missing"),
    ({"kind": "sqlite", "dsn": "postgresql://db/a"}, None, "store",
     "'dsn' is for kind postgres, but kind is sqlite"),
    ({"kind": "memory", "dsn": "postgresql://db/a"}, None, "store",
     "'dsn' is for kind postgres, but kind is memory"),
    ({"kind": "sqlite", "path": "decisions.sqlite"}, "postgresql://db/a", "store.kind",
     f"but the environment variable {DSN_ENV} is set"),
    ({"kind": "postgres"}, None, "store", f"needs 'dsn' or the environment variable {DSN_ENV}"),
    ({"kind": "memory", "path": "x.sqlite"}, None, "store",
     "store.path is for kind sqlite, but kind is memory"),
    ({"kind": "postgres", "dsn": "postgresql://db/a", "path": "x.sqlite"}, None, "store",
     "store.path is for kind sqlite, but kind is postgres"),
], ids=["no-kind", "empty", "dsn-sqlite", "dsn-memory", "env-sqlite", "postgres-no-dsn",
        "path-memory", "path-postgres"])
def test_ambiguous_store_blocks_are_refused(store, env, field, words, tmp_path,
                                            monkeypatch) -> None:
    monkeypatch.delenv(DSN_ENV, raising=False)
    if env is not None:
        monkeypatch.setenv(DSN_ENV, env)
    with pytest.raises(ConfigError) as refused:
        load_config(_config(tmp_path, store))
    assert f"  {field}" in str(refused.value) and words in str(refused.value)


def test_without_a_store_block_the_dsn_in_the_environment_chooses_postgres(
        tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(DSN_ENV, "postgresql://u:pw@db:5432/arbiter")
    store = load_config(_config(tmp_path, None)).store
    assert (store.kind, store.resolved_dsn) == ("postgres", "postgresql://u:pw@db:5432/arbiter")
    assert store.origin == f"the config has no store block and {DSN_ENV} is set"
    monkeypatch.delenv(DSN_ENV)
    store = load_config(_config(tmp_path, None)).store
    assert (store.kind, store.path) == ("sqlite", tmp_path / "arbiter.sqlite")
    explicit = load_config(_config(tmp_path, {"kind": "sqlite", "path": "a.sqlite"})).store
    assert explicit.origin == "" and explicit.path == tmp_path / "a.sqlite"


def _log_lines(process: GatewayProcess) -> list[str]:
    return [line for line in process.log.read_text().splitlines() if "decision store" in line]


def test_the_store_in_use_is_logged_with_its_password_masked(
        lr_pod, postgres_dsn: str, tmp_path: Path) -> None:
    secret_dsn = postgres_dsn.replace("arbiter@", "arbiter:s3cret-pw@")  # trust: ignored
    config = write_config(tmp_path / "gateway.yaml", {"lr": lr_pod}, DEPLOYMENTS, {})
    config.write_text(config.read_text().replace("store: {}\n", ""))  # no store block
    with GatewayProcess(config, env={DSN_ENV: secret_dsn}) as gateway:
        assert gateway.post("/v2/models/plain/infer", {"inputs": [{
            "name": "input", "datatype": "FP32", "shape": [1, 20],
            "data": [0.0] * 20}]})[0] == 200
    [line] = _log_lines(gateway)
    host_db = postgres_dsn.split("@", 1)[1]
    assert f"decision store: postgres at postgresql://arbiter:***@{host_db}" in line
    assert f"{DSN_ENV} is set" in line and "s3cret" not in gateway.log.read_text()


def _start(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "gateway", "--config", str(config),
         "--http-port", "0", "--grpc-port", "0"],
        cwd=ROOT, env={**os.environ, DSN_ENV: "", **(env or {})}, capture_output=True,
        text=True,
        timeout=60, check=False)


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr
    return lines[0]


def test_an_unreachable_postgres_is_one_line_and_status_1(tmp_path: Path) -> None:
    port = free_port()
    config = _config(tmp_path, {"kind": "postgres",
                                "dsn": f"postgresql://u:s3cret@127.0.0.1:{port}/arbiter"})
    line = _one_error_line(_start(config))
    assert f"cannot open the postgres decision store at postgresql://u:***@127.0.0.1:{port}/" \
        "arbiter: " in line
    assert "Connection refused" in line and "s3cret" not in line


def test_a_sqlite_folder_that_cannot_be_made_is_one_line_and_status_1(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    path = blocker / "arbiter.sqlite"
    line = _one_error_line(_start(_config(tmp_path, {"kind": "sqlite", "path": str(path)})))
    assert f"cannot open the sqlite decision store at {path}: cannot create its folder " \
        f"{blocker}" in line


@pytest.fixture
def read_only_folder(tmp_path: Path):
    """A folder with a store in it, then made read-only: a tmpfs remounted ``ro`` (root
    writes anywhere else), or a folder without write permission (not root)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        yield folder, lambda: folder.chmod(0o555)
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder, lambda: subprocess.run(["mount", "-o", "remount,ro", str(folder)],
                                             check=True)
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_read_only_sqlite_store_is_one_line_naming_its_path(read_only_folder,
                                                                tmp_path: Path) -> None:
    folder, make_read_only = read_only_folder
    path = folder / "arbiter.sqlite"
    config = _config(tmp_path, {"kind": "sqlite", "path": str(path)})
    created = _start_and_stop(config)
    assert path.exists(), created
    make_read_only()
    line = _one_error_line(_start(config))
    assert f"cannot open the sqlite decision store at {path}: " in line
    assert "read-only" in line


def _start_and_stop(config: Path) -> str:
    """Create the store by opening it once (in a process of its own)."""
    code = ("import asyncio, sys\nfrom gateway.config import load_config\n"
            "from gateway.decisions import build_store\n"
            "async def main():\n"
            "    store = build_store(load_config(sys.argv[1]).store)\n"
            "    await store.open(['plain'])\n    await store.close()\n"
            "asyncio.run(main())\n")
    done = subprocess.run([sys.executable, "-c", code, str(config)], cwd=ROOT,
                          env={**os.environ, DSN_ENV: ""}, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_a_store_spec_survives_a_json_round_trip_of_every_kind(tmp_path: Path) -> None:
    """The path refused beside kind memory or postgres is the config file's own: a spec
    dumped to JSON (with its default path) and read back stays valid."""
    for store in ({"kind": "memory"}, {"kind": "postgres", "dsn": "postgresql://u@db:5432/a"},
                  {"kind": "sqlite", "path": "a.sqlite"}):
        spec = load_config(_config(tmp_path, store)).store
        again = StoreSpec.model_validate_json(spec.model_dump_json())
        assert again.model_dump() == spec.model_dump()
        assert (again.kind, again.dsn, again.path) == (spec.kind, spec.dsn, spec.path)


def test_a_whole_config_dumped_and_read_back_stays_valid(tmp_path: Path) -> None:
    """``model_dump`` of a config with a memory store carries the default path; written
    out and loaded again, it is the same config (``arbiter simulate`` users do this)."""
    import yaml

    for store in ({"kind": "memory"}, {"kind": "postgres", "dsn": "postgresql://u@db:5432/a"}):
        config = load_config(_config(tmp_path, store))
        again = tmp_path / "again.yaml"
        again.write_text(yaml.safe_dump(config.model_dump(mode="json")))
        assert load_config(again).store.kind == store["kind"]


def test_a_memory_store_with_a_path_ends_the_gateway_naming_the_field(tmp_path: Path) -> None:
    started = time.monotonic()
    done = _start(_config(tmp_path, {"kind": "memory", "path": "x.sqlite"}))
    assert time.monotonic() - started < 30
    assert done.returncode == 2, done.stderr  # an invalid config, like every refused block
    assert "Traceback" not in done.stderr
    assert "store.path is for kind sqlite, but kind is memory" in done.stderr


def test_a_sqlite_folder_nobody_can_create_ends_the_gateway_before_it_serves(
        tmp_path: Path) -> None:
    path = Path("/proc/arbiter-none/dir/a.sqlite")  # not even root creates folders here
    started = time.monotonic()
    line = _one_error_line(_start(_config(tmp_path, {"kind": "sqlite", "path": str(path)})))
    assert time.monotonic() - started < 30
    assert f"cannot open the sqlite decision store at {path}: cannot create its folder " \
        f"{path.parent}" in line


def _refused(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def silent_postgres():
    """A listening socket that never accepts nor answers (a hung server): the kernel
    completes the TCP handshake, then the client waits."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock


def _connecting(listener: socket.socket) -> None:
    """Wait until a client has connected to ``listener`` (it becomes readable)."""
    readable, _, _ = select.select([listener], [], [], 30.0)
    assert readable, "the gateway never tried to connect to the store"


def _gateway_on(config: Path, http_port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "gateway", "--config", str(config),
         "--http-port", str(http_port), "--grpc-port", "0"],
        cwd=ROOT, env={**os.environ, DSN_ENV: ""}, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_postgres_that_never_answers_ends_the_gateway_within_its_connect_timeout(
        silent_postgres: socket.socket, tmp_path: Path) -> None:
    """The store is connected before any port is bound: while it waits nothing serves,
    and the connect timeout (5 s) ends the gateway with status 1 and one line."""
    port = silent_postgres.getsockname()[1]
    config = _config(tmp_path, {"kind": "postgres",
                                "dsn": f"postgresql://u:s3cret@127.0.0.1:{port}/a"})
    http_port = free_port()
    started = time.monotonic()
    process = _gateway_on(config, http_port)
    try:
        _connecting(silent_postgres)
        assert process.poll() is None and _refused(http_port)  # waiting, not serving
        stderr = process.communicate(timeout=20)[1]
    finally:
        process.kill()
    elapsed = time.monotonic() - started
    print(f"unanswered postgres: status {process.returncode} after {elapsed:.2f} s")
    done = subprocess.CompletedProcess(process.args, process.returncode, "", stderr)
    line = _one_error_line(done)
    assert f"cannot open the postgres decision store at postgresql://u:***@127.0.0.1:" \
        f"{port}/a: " in line and "timeout" in line and "s3cret" not in line
    assert elapsed < 15


def test_sigterm_while_the_store_connects_ends_the_gateway(
        silent_postgres: socket.socket, tmp_path: Path) -> None:
    port = silent_postgres.getsockname()[1]
    config = _config(tmp_path, {"kind": "postgres", "dsn": f"postgresql://u@127.0.0.1:{port}/a"})
    process = _gateway_on(config, free_port())
    try:
        _connecting(silent_postgres)  # inside the connect, which would last 5 s
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        stderr = process.communicate(timeout=20)[1]
    finally:
        process.kill()
    took = time.monotonic() - sent
    print(f"SIGTERM during the store's connect: ended after {took:.2f} s")
    assert process.returncode == 0, stderr
    assert "stop requested during startup" in stderr and "Traceback" not in stderr
    assert took < 2.5
