"""The ``arbiter`` command.

Subcommands:
    serve-model  serve one scikit-learn, ONNX Runtime or PyTorch model over OIP
                 REST and gRPC (a model-wrapper pod);
    gateway      serve the deployments of a gateway config file;
    up           start every wrapper of a local run file and the gateway in front of
                 them, as separate processes (development and demos).
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
    parser.add_argument("--host", default="0.0.0.0", help="interface to bind")
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
    return parser


def _server_options(args: argparse.Namespace):
    from protos.server.app import ServerOptions

    return ServerOptions(
        host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
        max_body_bytes=int(args.max_body_mb * 2**20), drain_timeout_s=args.drain_timeout_s,
    )


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

        if isinstance(exc, ValidationError | ValueError | FileNotFoundError):
            log.error("%s", exc)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
