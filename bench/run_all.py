"""``make bench``: run every ``bench/bench_*.py`` in turn, each with its default settings, and say where the
figures went (``bench/results/<name>.md`` and ``.json``). Benchmarks give figures, not pass/fail; this exits
non-zero only when a benchmark itself crashed.

Usage: python bench/run_all.py [--only decode,router] [--list]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def discover() -> list[Path]:
    return sorted(BENCH.glob("bench_*.py"))


def short_name(path: Path) -> str:
    return path.stem.removeprefix("bench_")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="comma-separated names (e.g. decode,predictor)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)

    scripts = discover()
    if args.only:
        wanted = {n.strip() for n in args.only.split(",") if n.strip()}
        unknown = wanted - {short_name(p) for p in scripts}
        if unknown:
            known = ", ".join(short_name(p) for p in scripts)
            print(f"run_all: unknown benchmark(s) {', '.join(sorted(unknown))}; known: {known}", file=sys.stderr)
            return 2
        scripts = [p for p in scripts if short_name(p) in wanted]
    if args.list:
        for path in scripts:
            print(short_name(path))
        return 0
    if not scripts:
        print("run_all: no bench/bench_*.py found", file=sys.stderr)
        return 2

    outcomes = []
    for path in scripts:
        name = short_name(path)
        print(f"\n==> {path.relative_to(REPO)}", flush=True)
        started = time.monotonic()
        rc = subprocess.call([sys.executable, str(path)], cwd=REPO)
        outcomes.append((name, rc, time.monotonic() - started))

    print("\nbenchmark      status   seconds  results")
    for name, rc, seconds in outcomes:
        results = sorted(str(p.relative_to(REPO)) for p in (BENCH / "results").glob(f"{name}*.md"))
        status = "ok" if rc == 0 else f"exit {rc}"
        print(f"{name:<14} {status:<8} {seconds:7.0f}  {', '.join(results) or '-'}")
    return 1 if any(rc != 0 for _, rc, _ in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
