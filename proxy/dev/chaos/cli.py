"""``proxy chaos``: run the fault scenarios and print the table.

uv run proxy chaos                      # every scenario
uv run proxy chaos kill9-retry erasure-race --sessions 30
uv run proxy chaos cluster-failover     # 3 masters + 3 replicas, one master kill -9ed
uv run proxy chaos --python-path /tmp/main-src   # another checkout's proxy ("before")
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from proxy.dev.chaos.cluster import cluster_failover
from proxy.dev.chaos.engine import Tally
from proxy.dev.chaos.scenarios import SCENARIOS as SINGLE_NODE
from proxy.dev.chaos.scenarios import Options
from proxy.dev.chaos.servers import ChaosError

SCENARIOS = {**SINGLE_NODE, "cluster-failover": cluster_failover}

COLUMNS = ("scenario", "answered", "recorded", "lost", "duplicated", "notes")


def table(rows: list[Tally]) -> str:
    """A Markdown table (it pastes into the README as it is)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        counts = [row.answered, row.recorded, row.lost, row.duplicated]
        cells = [row.scenario, *(f"{c:,}" for c in counts), row.notes]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def run(names: list[str], options: Options) -> list[Tally]:
    rows = []
    for name in names:
        try:
            rows.append(await SCENARIOS[name](options))
        except ChaosError as exc:
            rows.append(Tally(name, notes=f"skipped: {exc}"))
        print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="proxy chaos", description=__doc__)
    parser.add_argument("scenarios", nargs="*", choices=[[], *SCENARIOS], default=[])
    parser.add_argument("--sessions", type=int, default=30, help="concurrent engine sessions")
    parser.add_argument("--model-names", type=int, default=5000)
    parser.add_argument(
        "--python-path", default=None, help="PYTHONPATH of the proxies (another checkout)"
    )
    args = parser.parse_args(argv)
    names = args.scenarios or list(SCENARIOS)
    options = Options(
        python_path=args.python_path, sessions=args.sessions, model_names=args.model_names
    )
    rows = asyncio.run(run(names, options))
    print(table(rows))
    return 0
