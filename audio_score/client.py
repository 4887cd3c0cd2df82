"""Placeholder: this subcommand is being built (see the open issues)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options yet."""


def run(args: argparse.Namespace) -> int:
    raise SystemExit(f"audio-score {args.command}: not built yet")
