"""Serve the selected models over the V2 (Open Inference) protocol with KServe: REST (with the binary tensor
extension) and gRPC, one model name per config key, with in-predictor dynamic batching."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        dest="models",
        action="append",
        default=None,
        metavar="KEY",
        help="serve this model key (repeatable; default: $AUDIO_SCORE_MODEL_KEYS, else every configured model)",
    )
    parser.add_argument("--http-port", type=int, default=8080, help="REST port (default 8080)")
    parser.add_argument("--grpc-port", type=int, default=8081, help="gRPC port (default 8081)")
    parser.add_argument("--no-grpc", action="store_true", help="serve REST only")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes; only 1 is supported (batching happens inside the one process)",
    )


def run(args: argparse.Namespace) -> int:
    from audio_score.errors import ConfigError
    from audio_score.settings import load_settings

    if args.workers != 1:
        raise ConfigError("--workers: only 1 is supported (each worker would load the model and batch alone)")
    models = [k.strip() for item in (args.models or []) for k in item.split(",") if k.strip()] or None
    settings = load_settings(args.config, model_keys=models)
    # kserve.model_server parses sys.argv at import (parse_known_args, with abbreviations): our --config would
    # be taken for its --configure_logging. Its flags are all passed as arguments below instead.
    saved, sys.argv = sys.argv, sys.argv[:1]
    try:
        import kserve  # noqa: F401  (parses the emptied argv now)

        from predictors.server import serve
    finally:
        sys.argv = saved
    return serve(settings, http_port=args.http_port, grpc_port=args.grpc_port, enable_grpc=not args.no_grpc)
