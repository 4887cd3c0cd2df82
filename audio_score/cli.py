"""The one entry point, ``audio-score``: a dispatcher that knows no subcommand by name.

Each part registers its own subcommands through the ``audio_score.commands`` entry-point group (pyproject.toml):
an entry point is a ``register(commands, parents)`` function that adds a parser to ``commands`` with the common
options of ``parents`` and sets ``run`` (``run(args) -> int``) as its default. The core library therefore imports
no service: an image that does not ship a part (the router image has no ``predictors``, no image has the tools)
simply lacks its subcommand, which ``--help`` lists as not installed. The registering modules import their heavy
dependencies (torch, kserve, fastapi) only inside ``run``, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points

from audio_score import __version__
from audio_score.errors import ScoreError

#: The entry-point group every part registers its subcommands in.
GROUP = "audio_score.commands"


def commands() -> dict[str, EntryPoint]:
    """The registered subcommands by name, from the installed distributions' metadata (``make venv`` reinstalls
    the project whenever pyproject.toml changes, so the table is never stale)."""
    return {ep.name: ep for ep in sorted(entry_points(group=GROUP), key=lambda ep: ep.name)}


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        default=None,
        help="path to config.json (default: $AUDIO_SCORE_CONFIG, else ./config.json)",
    )
    common.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audio-score", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"audio-score {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parents = [_common_options()]
    found = commands()
    if not found:
        parser.epilog = (
            f"no subcommand is registered (entry-point group {GROUP!r}): install the package, "
            "e.g. `pip install -e .`, so its metadata lists them"
        )
    for name, entry in found.items():
        try:
            register = entry.load()
        except ImportError as exc:
            # The part is not installed here (e.g. `predictor` in the router image): listed, not runnable.
            reason = f"not installed in this environment ({exc})"
            absent = sub.add_parser(name, help=f"[{reason}]", description=reason, parents=parents)
            absent.set_defaults(run=None, absent=reason)
            continue
        register(sub, parents)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        print(f"audio-score {args.command}: error: {getattr(args, 'absent', 'not runnable')}", file=sys.stderr)
        return 2
    from audio_score.logs import configure_logging

    configure_logging(args.log_level)
    try:
        return int(args.run(args) or 0)
    except ScoreError as exc:
        # A config or input error is the user's to fix: one clear message, no traceback.
        logging.getLogger("audio_score").debug("command failed", exc_info=True)
        print(f"audio-score {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
