"""The one entry point, ``audio-score``, and its subcommands.

Each subcommand lives in the part it belongs to and exposes ``add_arguments(parser)`` and ``run(args) -> int``;
those modules import their heavy dependencies (torch, kserve, fastapi) only inside ``run``, so ``--help`` is
fast and the router's image, which has no torch, can still import this file.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from audio_score import __version__
from audio_score.errors import AudioScoreError

#: subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "cache-build": ("audio_score.cachebuild", "fill the reference cache for every clip and model"),
    "predictor": ("predictors.cli", "serve models over the V2 (Open Inference) protocol with KServe"),
    "router": ("router.cli", "serve POST /score and dispatch to the model's predictor"),
    "up": ("audio_score.up", "everything on this machine: cache build, one predictor per model, the router"),
    "score": ("audio_score.client", "score an audio file (or a folder) through a running router"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audio-score", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"audio-score {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        cmd.add_argument(
            "--config",
            default=None,
            help="path to config.json (default: $AUDIO_SCORE_CONFIG, else ./config.json)",
        )
        cmd.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
        module.add_arguments(cmd)
        cmd.set_defaults(_module=module_name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from audio_score.logs import configure_logging

    configure_logging(args.log_level)
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except AudioScoreError as exc:
        # A config or input error is the user's to fix: one clear message, no traceback.
        logging.getLogger("audio_score").debug("command failed", exc_info=True)
        print(f"audio-score {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
