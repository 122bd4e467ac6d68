"""The ``arbiter`` command.

Subcommands:
    serve-model  serve one scikit-learn, ONNX Runtime or PyTorch model over OIP
                 REST and gRPC (a model-wrapper pod);
    gateway      serve the deployments of a gateway config file;
    up           start every wrapper of a local run file and the gateway in front of
                 them, as separate processes (development and demos);
    replay       estimate a candidate router's mean reward on a deployment's logged
                 decisions (IPS, SNIPS, doubly robust);
    simulate     run the routers of a gateway config against recorded outcomes;
    report       write a deployment's fairness figures and charts from its store.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

__all__ = ["main"]

log = logging.getLogger("arbiter")


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0-65535)")
    return port


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
    return value


def _add_server_args(parser: argparse.ArgumentParser, http: int, grpc: int) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1",
        help="interface to bind (default 127.0.0.1: this machine only; 0.0.0.0 for every "
        "interface, as in a container)",
    )
    parser.add_argument("--http-port", type=_port, default=http, help="REST port (0: any)")
    parser.add_argument("--grpc-port", type=_port, default=grpc, help="gRPC port (0: any)")
    parser.add_argument(
        "--drain-timeout-s", type=_non_negative, default=10.0,
        help="seconds in-flight requests get to finish on SIGTERM",
    )
    parser.add_argument(
        "--max-body-mb", type=_positive, default=64.0, help="largest request body, in MiB"
    )
    parser.add_argument("--log-level", default="INFO", help="logging level")
    parser.add_argument(
        "--workers", type=_count, default=1,
        help="server processes sharing the ports (SO_REUSEPORT); use one per core",
    )
    security = parser.add_argument_group("security")
    security.add_argument(
        "--auth-tokens-file",
        help="YAML list of {name, sha256, scopes}: every request then needs "
        "Authorization: Bearer <token> with the route's scope (gateway: or auth.tokens_file)",
    )
    security.add_argument(
        "--auth-protect-metrics", action="store_true",
        help="/metrics needs a token too (health stays open)",
    )
    security.add_argument("--tls-cert", help="PEM certificate chain: REST and gRPC over TLS")
    security.add_argument("--tls-key", help="PEM private key of --tls-cert")
    security.add_argument(
        "--tls-client-ca", help="PEM CA: clients must present a certificate it signed (mTLS)",
    )
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)


def _count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError(f"{text} must be from 1 to 256")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arbiter", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    model = sub.add_parser("serve-model", help="serve one model over OIP REST and gRPC")
    model.add_argument("--framework", help="sklearn, onnx, torch, or pkg.mod:Class")
    model.add_argument("--model", help="path of the model artifact")
    model.add_argument(
        "--name", help="model name (required unless the settings file has one)"
    )
    model.add_argument("--version", help="model version (overrides the settings file)")
    model.add_argument("--settings", help="model settings YAML file")
    _add_server_args(model, 8080, 8081)
    gw = sub.add_parser("gateway", help="serve the deployments of a gateway config")
    gw.add_argument("--config", required=True, help="gateway config YAML file")
    _add_server_args(gw, 8000, 8001)
    up = sub.add_parser("up", help="start the wrappers and gateway of a local run file")
    up.add_argument("--config", required=True, help="local run file (YAML)")
    up.add_argument("--log-level", default="INFO", help="logging level")
    _add_offline_parsers(sub)
    _add_report_parser(sub)
    return parser


def _add_report_parser(sub) -> None:
    """``report``: fairness figures and charts from a store (serves nothing)."""
    report = sub.add_parser(
        "report", help="write a deployment's fairness figures and charts from its store",
        description="Count a deployment's stored decisions per model and protected group "
        "(its monitoring spec as the gateway recorded it, or --config's) and write "
        "OUT/fairness.json and OUT/fairness_<attribute>.png (approval and error rate per "
        "group over time, models side by side).",
    )
    _add_store_argument(report)
    report.add_argument("--deployment", required=True, help="deployment to report on")
    report.add_argument("--out", required=True, help="folder for the JSON and PNG files")
    report.add_argument("--config", help="gateway config whose monitoring block to use "
                        "(default: the one recorded in the store)")
    report.add_argument("--every-s", type=_trials, help="seconds per point of the charts "
                        "(default: a step that gives at most 24 points)")
    report.add_argument("--log-level", default="WARNING", help="logging level")


def _add_store_argument(parser) -> None:
    """``--store`` of the commands that read a decision store offline."""
    parser.add_argument("--store", required=True,
                        help="decision store: a SQLite file (or sqlite:///path) or a "
                        "postgresql:// DSN")


def _add_offline_parsers(sub) -> None:
    """``replay`` and ``simulate``: offline commands that serve nothing."""
    replay = sub.add_parser(
        "replay", help="estimate a candidate router's mean reward on logged decisions",
        description="Estimate what a candidate router would have earned on the decisions "
        "a deployment logged (those with feedback), off-policy: IPS, self-normalised IPS "
        "and doubly robust, each with a 95% interval, and the effective sample size. "
        "Writes OUT/replay.json; warnings about weak support go to stderr too.",
    )
    _add_store_argument(replay)
    replay.add_argument("--deployment", required=True, help="deployment whose log is used")
    replay.add_argument("--policy", required=True,
                        help="YAML file with one router: block in the gateway config's "
                        "format, e.g. 'router: {kind: weighted, weights: {gbm: 100}}'")
    replay.add_argument("--out", required=True, help="folder for replay.json")
    replay.add_argument("--reward-model", choices=("auto", "mean"), default="auto",
                        help="DR reward model: auto uses the recorded rewards of decisions "
                        "that scored every candidate model, else per-model means; mean "
                        "always uses per-model means (default: auto)")
    replay.add_argument("--min-ess", type=_non_negative, default=100.0,
                        help="warn when the effective sample size is below this "
                        "(default: 100)")
    replay.add_argument("--since", type=float, help="first decision time (Unix seconds)")
    replay.add_argument("--until", type=float, help="decisions before this (Unix seconds)")
    replay.add_argument("--log-level", default="WARNING", help="logging level")
    sim = sub.add_parser(
        "simulate", help="run a config's routers against recorded outcomes",
        description="Run the router of each deployment of a gateway config against "
        "recorded outcomes, through the gateway's learning path, for several seeds. "
        "Writes OUT/simulation.json (regret, traffic share, promotions, false-promotion "
        "rate, per seed and aggregated) and OUT/regret.png.",
    )
    sim.add_argument("--config", required=True, help="gateway config YAML file")
    sim.add_argument("--outcomes", required=True,
                     help="CSV: a header of model keys, one row per request, each cell "
                     "that model's reward in [0, 1] (python -m examples.credit.outcomes "
                     "makes one from the credit example)")
    sim.add_argument("--seeds", type=_trials, required=True,
                     help="number of seeded runs (each draws its own requests)")
    sim.add_argument("--out", required=True, help="folder for simulation.json and regret.png")
    sim.add_argument("--steps", type=_trials, default=1000,
                     help="requests per run, drawn from the rows with replacement "
                     "(default: 1000)")
    sim.add_argument("--feedback-delay", type=int, default=0,
                     help="requests between a decision and its feedback (default: 0)")
    sim.add_argument("--deployment", action="append",
                     help="simulate only this deployment (repeatable; default: all)")
    sim.add_argument("--log-level", default="WARNING", help="logging level")


def _trials(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 10_000_000:
        raise argparse.ArgumentTypeError(f"{text} must be from 1 to 10000000")
    return value


def _offline(args: argparse.Namespace) -> int:
    """``replay`` and ``simulate``; a store that cannot be read ends with status 1."""
    from gateway.decisions import StoreError

    try:
        if args.command == "report":
            from gateway.fairness_report import run_report
            from gateway.replay import store_spec

            run_report(store_spec(args.store), args.deployment, args.out,
                       config=args.config, every_s=args.every_s)
        elif args.command == "replay":
            from gateway.replay import run_replay

            run_replay(args.store, args.deployment, args.policy, args.out,
                       reward_model=args.reward_model, min_ess=args.min_ess,
                       since=args.since, until=args.until)
        else:
            from gateway.simulate import run_simulate

            run_simulate(args.config, args.outcomes, args.seeds, args.out, steps=args.steps,
                         feedback_delay=max(args.feedback_delay, 0),
                         deployments=args.deployment)
    except StoreError as exc:
        log.error("%s", exc)
        return 1
    return 0


def _server_options(args: argparse.Namespace):
    from protos.server.app import ServerOptions
    from protos.server.auth import AuthPolicy

    auth = None
    if args.auth_tokens_file:
        auth = AuthPolicy.from_file(args.auth_tokens_file,
                                    protect_metrics=args.auth_protect_metrics)
    return ServerOptions(
        host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
        max_body_bytes=int(args.max_body_mb * 2**20), drain_timeout_s=args.drain_timeout_s,
        reuse_port=args.reuse_port, auth=auth, tls=_tls(args),
    )


def _tls(args: argparse.Namespace):
    from protos.server.tls import ServerTls

    if not (args.tls_cert or args.tls_key or args.tls_client_ca):
        return None
    if not (args.tls_cert and args.tls_key):
        raise SystemExit("arbiter: --tls-cert and --tls-key go together "
                         "(--tls-client-ca needs both)")
    for path in (args.tls_cert, args.tls_key, args.tls_client_ca):
        if path and not Path(path).is_file():
            raise SystemExit(f"arbiter: TLS file not found: {path}")
    ca = Path(args.tls_client_ca).resolve() if args.tls_client_ca else None
    return ServerTls(Path(args.tls_cert).resolve(), Path(args.tls_key).resolve(), ca)


def _security_argv(args: argparse.Namespace) -> list[str]:
    """The security flags again, for each worker of ``--workers``."""
    argv = []
    for flag, value in (("--auth-tokens-file", args.auth_tokens_file),
                        ("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key),
                        ("--tls-client-ca", args.tls_client_ca)):
        if value:
            argv += [flag, str(Path(value).resolve())]
    return argv + (["--auth-protect-metrics"] if args.auth_protect_metrics else [])


def _model_settings(args: argparse.Namespace):
    from wrappers.settings import ModelSettings, load_settings

    settings = load_settings(args.settings) if args.settings else None
    if settings is None and not args.name:
        raise SystemExit("arbiter serve-model: --name is required (or a --settings file "
                         "with a name)")
    update = {
        key: value
        for key, value in (
            ("name", args.name), ("version", args.version),
            ("framework", args.framework),
            ("uri", str(Path(args.model).resolve()) if args.model else None),
        )
        if value is not None
    }
    if settings is None:
        return ModelSettings(**update)
    return ModelSettings(**{**settings.model_dump(), **update})


def _checked_settings(args: argparse.Namespace):
    settings = _model_settings(args)
    if not settings.framework or not settings.uri:
        raise SystemExit("arbiter serve-model: --framework and --model (or a settings file "
                         "with framework and uri) are required")
    if not Path(settings.uri).exists():
        raise SystemExit(f"arbiter serve-model: model file not found: {settings.uri}")
    return settings


async def _serve_model(args: argparse.Namespace, settings) -> None:
    from protos.registry import ModelRegistry
    from protos.server.app import Server
    from wrappers.loader import wrapper_from_settings
    from wrappers.target import ModelTarget

    target = ModelTarget(wrapper_from_settings(settings), settings)
    server = Server(
        ModelRegistry([target]), _server_options(args),
        on_startup=[target.load], on_cleanup=[target.unload],
    )
    target.batcher.on_batch = server.metrics.batch_size.labels(settings.name).observe
    await server.serve_forever()


async def _gateway(args: argparse.Namespace) -> None:
    from gateway.app import run_gateway

    await run_gateway(Path(args.config), _server_options(args))


def _workers(args: argparse.Namespace) -> int:
    """``--workers N``: check what every worker would check, then supervise N of them.

    Raises:
        ConfigError: invalid gateway config, or a memory store (workers would not share
            what they learn).
    """
    from gateway.workers import WorkerPlan, run_workers

    _server_options(args)  # refuse bad security files before any worker starts
    common = ["--drain-timeout-s", str(args.drain_timeout_s),
              "--max-body-mb", str(args.max_body_mb), "--log-level", args.log_level,
              *_security_argv(args)]
    if args.command == "gateway":
        from gateway.config import ConfigError, load_config

        if load_config(args.config).store.kind == "memory":
            raise ConfigError("--workers needs store kind sqlite or postgres: with kind "
                              "memory each worker would learn alone")
        argv = ["gateway", "--config", str(Path(args.config).resolve()), *common]
    else:
        settings = _checked_settings(args)
        argv = ["serve-model", "--settings", _settings_file(settings), *common]
    plan = WorkerPlan(argv, args.workers, args.host, args.http_port, args.grpc_port)
    return run_workers(plan)


def _settings_file(settings) -> str:
    """The resolved model settings, written where every worker can read them."""
    import tempfile

    import yaml

    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept for the workers' lifetime
        "w", prefix="arbiter-model-", suffix=".yaml", delete=False
    )
    with handle:
        yaml.safe_dump(settings.model_dump(mode="json", exclude_none=True), handle)
    return handle.name


def _run(coro) -> None:
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(coro)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``arbiter`` console script; returns the exit status."""
    from protos.errors import ArbiterError

    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command in ("replay", "simulate", "report"):
            return _offline(args)
        if args.command != "up" and args.workers > 1:
            return _workers(args)
        if args.command == "serve-model":
            _run(_serve_model(args, _checked_settings(args)))
        elif args.command == "gateway":
            _run(_gateway(args))
        else:
            from gateway.up import run_up

            return run_up(Path(args.config))
    except (OSError, ArbiterError) as exc:
        log.error("%s", exc)
        return 1
    except Exception as exc:  # startup failure: one clear line, non-zero exit
        from pydantic import ValidationError

        from gateway.decisions.dialect import StoreError

        if isinstance(exc, StoreError):  # names the path or host, and the cause
            log.error("%s", exc)
            return 1
        if isinstance(exc, ValidationError | ValueError | FileNotFoundError):
            log.error("%s", exc)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
