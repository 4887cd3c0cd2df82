"""Serve the selected models over the V2 (Open Inference) protocol with KServe: REST (with the binary tensor
extension) and gRPC, one model name per config key, with in-predictor dynamic batching."""

from __future__ import annotations

import argparse
import logging
import os
import sys

log = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    """The ``audio-score`` entry point (group ``audio_score.commands``) adds ``predictor`` here."""
    parser = commands.add_parser(
        "predictor",
        parents=parents,
        help="serve models over the V2 (Open Inference) protocol with KServe",
        description=__doc__,
    )
    add_arguments(parser)
    parser.set_defaults(run=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        dest="models",
        action="append",
        default=None,
        metavar="KEY",
        help="serve this model key (repeatable or comma-separated); wins over $AUDIO_SCORE_MODEL_KEYS and "
        "$AUDIO_SCORE_MODEL_KEY (the log says so when both are given); default: every configured model",
    )
    parser.add_argument("--http-port", type=int, default=8080, help="REST port (default 8080)")
    parser.add_argument("--grpc-port", type=int, default=8081, help="gRPC port (default 8081)")
    parser.add_argument("--no-grpc", action="store_true", help="serve REST only")


def run(args: argparse.Namespace) -> int:
    from audio_score.env_settings import PredictorEnv
    from audio_score.settings import load_settings

    models = [k.strip() for item in (args.models or []) for k in item.split(",") if k.strip()] or None
    from_env = {
        name: os.environ[name] for name in ("AUDIO_SCORE_MODEL_KEYS", "AUDIO_SCORE_MODEL_KEY") if name in os.environ
    }
    if models and from_env:
        # One documented rule: the flag wins over the environment; say so, the pod spec may set both.
        log.warning("--model wins over the environment", extra={"models": models, "ignored": from_env})
    settings = load_settings(PredictorEnv, args.config, model_keys=models)
    # kserve.model_server parses sys.argv at import (parse_known_args, with abbreviations): our --config would
    # be taken for its --configure_logging. Its flags are all passed as arguments below instead.
    saved, sys.argv = sys.argv, sys.argv[:1]
    try:
        import kserve  # noqa: F401  (parses the emptied argv now)

        from predictors.server import serve
    finally:
        sys.argv = saved
    return serve(settings, http_port=args.http_port, grpc_port=args.grpc_port, enable_grpc=not args.no_grpc)
