"""``audio-score router``: serve POST /score on a port or a Unix socket and dispatch to the predictors."""

from __future__ import annotations

import argparse
import os
from typing import Any


def register(commands: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    """The ``audio-score`` entry point (group ``audio_score.commands``) adds ``router`` here."""
    parser = commands.add_parser(
        "router", parents=parents, help="serve POST /score and dispatch to the model's predictor", description=__doc__
    )
    add_arguments(parser)
    parser.set_defaults(run=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="bind address (default: $AUDIO_SCORE_SERVER_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: $AUDIO_SCORE_SERVER_PORT, 8000)")
    parser.add_argument(
        "--socket", default=None, help="serve on this Unix socket instead (default: $AUDIO_SCORE_SERVER_SOCKET)"
    )
    parser.add_argument(
        "--predictor-url",
        default=None,
        help="predictor URL template, {model} replaced by the model key (default: $AUDIO_SCORE_PREDICTOR_URL, "
        "else the in-cluster KServe predictor Service)",
    )
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from audio_score.env_settings import RouterEnv
    from audio_score.settings import load_settings
    from router.app import create_app

    # Flags win over the environment; workers are separate processes that rebuild the settings from the
    # environment, so the overrides are handed down through it.
    overrides = {"AUDIO_SCORE_PREDICTOR_URL": args.predictor_url} if args.predictor_url else {}
    settings = load_settings(RouterEnv, args.config, env={**os.environ, **overrides})
    host = args.host or settings.env.server_host
    port = settings.env.server_port if args.port is None else args.port
    socket = args.socket or settings.env.server_socket
    bind: dict[str, Any] = {"uds": socket} if socket else {"host": host, "port": port}
    common: dict[str, Any] = {
        "log_config": None,
        "timeout_keep_alive": 65,
        "proxy_headers": True,
        "access_log": settings.env.debug_request_logs,  # one line per request only when asked for
        **bind,
    }
    if args.workers > 1:
        os.environ.update({**overrides, "AUDIO_SCORE_CONFIG": str(settings.config_path)})
        uvicorn.run("router.app:app_factory", factory=True, workers=args.workers, **common)
    else:
        uvicorn.run(create_app(settings), **common)
    return 0
