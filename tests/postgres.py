"""A real, throwaway PostgreSQL server for tests and benchmarks.

:class:`PostgresServer` creates a cluster in a fresh temporary directory (``initdb``),
starts it on a free TCP port of 127.0.0.1 (``pg_ctl start``), and on :meth:`~PostgresServer.stop`
shuts it down (``pg_ctl stop -m fast``) and deletes the directory. It needs the server
binaries ``initdb``, ``pg_ctl`` and ``postgres`` (PostgreSQL 15 or later), looked up on
``PATH`` and then under ``/usr/lib/postgresql/<version>/bin`` (the Debian layout);
:func:`postgres_available` says whether they are there. Nothing here imports pytest, so a
benchmark script can use it the same way the ``postgres_server`` fixture does::

    with PostgresServer() as server:
        dsn = server.create_database("bench")

Layout of the temporary directory::

    arbiter-pg-XXXX/
        data/         the cluster (initdb -D)
        sock/         the Unix-domain socket directory (-k), kept out of /var/run
        server.log    the server's log (pg_ctl -l); its tail is in every start error

PostgreSQL refuses to run as root. When this process is root (as in CI containers), the
directory is created under ``/tmp`` (world-traversable), handed to the ``postgres``
system user, and ``initdb`` / ``pg_ctl`` run as that user through ``runuser -u postgres``.
The cluster's superuser is ``arbiter`` in both cases, with ``trust`` authentication, so a
client connects as ``arbiter`` without a password.

Errors: :class:`PostgresError` when the binaries are missing (the message of
:func:`postgres_available`), when running as root without a ``postgres`` user or
``runuser``, or when ``initdb`` or the server fails (with their output and the tail of
``server.log``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

__all__ = ["PostgresError", "PostgresServer", "find_binaries", "free_port", "postgres_available"]

BINARIES = ("initdb", "pg_ctl", "postgres")
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
SUPERUSER = "arbiter"
SYSTEM_USER = "postgres"  # the OS account the server runs as when we are root
START_ATTEMPTS = 3  # a free port can be taken between probing it and the server binding it
LOG_TAIL_LINES = 30
COMMAND_TIMEOUT_S = 120.0

_MISSING = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH or in "
    f"{DEBIAN_BIN_GLOB}: install PostgreSQL 15 (Debian package postgresql-15) to run "
    "these tests"
)


class PostgresError(RuntimeError):
    """The PostgreSQL server could not be found, initialised, started or stopped."""


def _bin_dir_version(path: str) -> tuple[int, ...]:
    """``/usr/lib/postgresql/15/bin`` -> ``(15,)``; unparsable versions sort first."""
    name = Path(path).parent.name
    return tuple(int(part) for part in name.split(".")) if name.replace(".", "").isdigit() else ()


def find_binaries() -> dict[str, Path] | None:
    """Paths of ``initdb``, ``pg_ctl`` and ``postgres``, or None when any is missing.

    All three come from one place: ``PATH`` when it has them all, else the newest
    ``/usr/lib/postgresql/<version>/bin`` that does.
    """
    on_path = {name: shutil.which(name) for name in BINARIES}
    if all(on_path.values()):
        return {name: Path(path) for name, path in on_path.items() if path}
    for bin_dir in sorted(glob.glob(DEBIAN_BIN_GLOB), key=_bin_dir_version, reverse=True):
        paths = {name: Path(bin_dir) / name for name in BINARIES}
        if all(os.access(path, os.X_OK) for path in paths.values()):
            return paths
    return None


def _root_problem() -> str | None:
    """Why we cannot run the server as root's stand-in, or None when we can."""
    if os.geteuid() != 0:
        return None
    if shutil.which("runuser") is None:
        return "running as root needs `runuser` (util-linux) to start PostgreSQL as a non-root user"
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        return f"running as root needs a {SYSTEM_USER!r} system user to run PostgreSQL as"
    return None


def postgres_available() -> str | None:
    """None when a server can be started here, else a message saying what is missing."""
    if find_binaries() is None:
        return _MISSING
    return _root_problem()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (PostgreSQL cannot bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc.strerror})"
    return "\n".join(text.splitlines()[-lines:])


class PostgresServer:
    """A PostgreSQL cluster in a temporary directory, serving on 127.0.0.1.

    Use as a context manager (starts on enter, stops on exit) or call :meth:`start` and
    :meth:`stop`. After start, :attr:`port` and :attr:`dsn` are set.

    Args:
        max_connections: The server's ``max_connections``.

    Raises:
        PostgresError: From :meth:`start`, see the module docstring.
    """

    def __init__(self, *, max_connections: int = 200) -> None:
        self.max_connections = max_connections
        self.port: int | None = None
        self.root: Path | None = None
        self._binaries: dict[str, Path] = {}
        self._as_root = os.geteuid() == 0
        self._paused = False

    @property
    def dsn(self) -> str:
        """``postgresql://arbiter@127.0.0.1:<port>/postgres`` (the maintenance database)."""
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        """The DSN of ``database`` on this server."""
        if self.port is None:
            raise PostgresError("the PostgreSQL server is not started")
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @property
    def data_dir(self) -> Path:
        return self._path("data")

    @property
    def socket_dir(self) -> Path:
        return self._path("sock")

    @property
    def log_path(self) -> Path:
        return self._path("server.log")

    def _path(self, name: str) -> Path:
        if self.root is None:
            raise PostgresError("the PostgreSQL server has no directory (not started)")
        return self.root / name

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> PostgresServer:
        """Create the cluster and start the server; on failure, clean up and raise."""
        problem = postgres_available()
        if problem is not None:
            raise PostgresError(problem)
        self._binaries = find_binaries() or {}
        self._make_dirs()
        try:
            self._initdb()
            self._start_server()
        except BaseException:
            self._abandon()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (``pg_ctl stop -m fast``) and delete its directory; idempotent."""
        if self.root is None:
            return
        try:
            if self.port is not None and not self._paused:
                self._pg_ctl("-m", "fast", "stop")
        finally:
            self.port = None
            self._remove_dirs()

    def pause(self) -> None:
        """Shut the server down (``pg_ctl stop -m fast``: connections are closed), keeping
        its cluster and port for :meth:`resume` (an outage, for tests)."""
        if self.port is None:
            raise PostgresError("the PostgreSQL server is not started")
        self._pg_ctl("-m", "fast", "stop")
        self._paused = True

    def resume(self) -> None:
        """Start the server again on the same port after :meth:`pause`."""
        if self.port is None:
            raise PostgresError("the PostgreSQL server was never started")
        self._pg_ctl("-o", self._server_options(), "-l", str(self.log_path), "start")
        self._paused = False

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- databases -------------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """``CREATE DATABASE name`` and return its DSN.

        Raises:
            psycopg.Error: The name is taken or invalid, or the server is unreachable.
        """
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn_for(name)

    # -- steps -----------------------------------------------------------------------

    def _make_dirs(self) -> None:
        # As root, /tmp rather than $TMPDIR: the postgres user must be able to traverse
        # every parent, and /tmp is world-traversable (mode 1777).
        parent = "/tmp" if self._as_root else None
        self.root = Path(tempfile.mkdtemp(prefix="arbiter-pg-", dir=parent))
        self.socket_dir.mkdir()
        if self._as_root:
            account = pwd.getpwnam(SYSTEM_USER)
            self.root.chmod(0o755)
            for path in (self.root, self.socket_dir):
                os.chown(path, account.pw_uid, account.pw_gid)

    def _abandon(self) -> None:
        """After a failed start: stop a server that may still be coming up, drop the files."""
        if self.root is not None and (self.data_dir / "postmaster.pid").exists():
            try:
                self._pg_ctl("-m", "immediate", "stop")
            except PostgresError:
                pass  # the start error being raised says more than this one
        self.port = None
        self._remove_dirs()

    def _remove_dirs(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def _initdb(self) -> None:
        # --locale=C accepts UTF8 whatever the caller's locale; --no-sync only skips
        # flushing initdb's own files (the directory is thrown away), the server still fsyncs.
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip

    def _start_server(self) -> None:
        for attempt in range(1, START_ATTEMPTS + 1):
            self.port = free_port()
            try:
                self._pg_ctl("-o", self._server_options(), "-l", str(self.log_path), "start")
                return
            except PostgresError:
                self.port = None
                if attempt == START_ATTEMPTS or "could not bind" not in _tail(self.log_path):
                    raise

    def _pg_ctl(self, *args: str) -> None:
        """``pg_ctl`` on this cluster, waiting (up to 60 s) for the operation to finish."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-t", "60", *args)

    def _server_options(self) -> str:
        """The ``postgres`` arguments; pg_ctl hands this string to /bin/sh, hence quoting."""
        return (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {shlex.quote(str(self.socket_dir))}"
            f" -c fsync=on -c max_connections={self.max_connections}"
        )

    def _run(self, binary: str, *args: str) -> None:
        """Run one of the PostgreSQL binaries (as ``postgres`` when we are root)."""
        command = [str(self._binaries[binary]), *args]
        if self._as_root:
            command = ["runuser", "-u", SYSTEM_USER, "--", *command]
        try:
            done = subprocess.run(
                command, cwd=self.root, capture_output=True, text=True,
                timeout=COMMAND_TIMEOUT_S, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise self._error(command, f"timed out after {exc.timeout} s") from exc
        if done.returncode != 0:
            raise self._error(command, f"exit status {done.returncode}\n{done.stdout}{done.stderr}")

    def _error(self, command: list[str], detail: str) -> PostgresError:
        log = _tail(self.log_path) if self.root is not None else "(no log)"
        return PostgresError(
            f"{shlex.join(command)} failed: {detail.strip()}\n"
            f"--- last {LOG_TAIL_LINES} lines of server.log ---\n{log}"
        )
