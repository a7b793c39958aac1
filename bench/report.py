"""One figure of a bench with its target, as ``bench/run_all.py`` collects them.

A bench given ``--json FILE`` writes its figures there (a JSON list of ``Figure``), besides its
usual printout; ``passed`` is None for a figure printed for context, without a target.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Figure:
    bench: str  # the script: "latency", "webhooks", ...
    name: str  # what was measured, e.g. "LinkTime p99 at 50 % load"
    value: float
    unit: str  # "ms", "events/s", "ratio", ...
    target: str  # e.g. "< 50"; "" for context only
    passed: bool | None


def write_json(path: str | Path, figures: list[Figure]) -> None:
    Path(path).write_text(json.dumps([asdict(f) for f in figures], indent=1))


def read_json(path: str | Path) -> list[Figure]:
    return [Figure(**item) for item in json.loads(Path(path).read_text())]
