"""Shared helpers for the benchmarks: machine description and result files (JSON + a markdown table)."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """What the figures were measured on; GPU name when torch sees one."""
    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["gpu"] = None
    return info


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return "" if value is None else str(value)


def write_results(name: str, payload: dict[str, Any], table_rows: list[dict[str, Any]], notes: str = "") -> Path:
    """``bench/results/<name>.json`` and ``<name>.md``; prints the table."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), **payload}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    table = markdown_table(table_rows)
    m = payload["machine"]
    header = f"# {name}\n\nMachine: {m['cores']} cores ({m['cpu']}), GPU: {m.get('gpu') or 'none'}, {m['date']}.\n"
    (RESULTS / f"{name}.md").write_text(f"{header}\n{table}\n\n{notes}\n".rstrip() + "\n")
    print(table)
    if notes:
        print(notes)
    return RESULTS / f"{name}.md"


async def closed_loop(
    send: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]],
    concurrency: int,
    total: int,
    *,
    until: float | None = None,
) -> tuple[list[float], list[str]]:
    """``total`` requests from ``concurrency`` closed-loop clients sharing one pooled client: latencies in ms
    and the error lines of non-200 answers. ``until`` (a ``time.monotonic()`` deadline) ends it earlier: no
    request starts after it (a soak run by duration passes a large ``total``)."""
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:

        async def worker() -> None:
            for _ in counter:
                if until is not None and time.monotonic() >= until:
                    return
                started = time.perf_counter()
                response = await send(client)
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    errors.append(f"{response.status_code}: {response.text[:200]}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors
