"""Summarise a py-spy ``--format raw`` profile (as written by ``webhooks.py --profile``).

    /work/.venv/bin/python bench/profile_top.py /tmp/worker.raw [--top 25]

Prints where the sampled worker time goes: inclusive share of the functions on the stack (a
function counts once per sample however deep it recurses), self share of the innermost frames,
and a rough split into areas (SQL, HTTP, the broker, validation...).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# First match on a stack, innermost first, names the area a sample is charged to. Order
# matters: the SQL driver inside a webhook call is still SQL, httpcore inside the plugin is HTTP.
AREAS: list[tuple[str, re.Pattern[str]]] = [
    ("psycopg (driver, DB round trips)", re.compile(r"psycopg/")),
    ("SQLAlchemy (compile, ORM, pool)", re.compile(r"sqlalchemy/")),
    ("httpx/httpcore (HTTP client)", re.compile(r"httpx/|httpcore/|h11/")),
    ("asyncio (loop, streams, sockets)", re.compile(r"asyncio/")),
    (
        "webhook plugin (SSRF guard, signing, payload)",
        re.compile(r"linktime_webhook|standardwebhooks"),
    ),
    ("pydantic (validation, dump)", re.compile(r"pydantic")),
    ("dramatiq / redis (broker)", re.compile(r"dramatiq/|redis/")),
    ("linktime engine", re.compile(r"linktime/")),
]
_FRAME = re.compile(r"^(?P<func>.*) \((?P<where>[^()]*)\)$")


def parse(path: Path) -> list[tuple[list[str], int]]:
    """(frames outermost first, without the process frames, samples) per line."""
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        stacks.append((frames, int(count)))
    return stacks


def short(frame: str) -> str:
    m = _FRAME.match(frame)
    if m is None:
        return frame
    where = m.group("where").rsplit(":", 1)[0]  # the function, not the sampled line
    return f"{m.group('func')} ({where})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    stacks = parse(args.profile)
    total = sum(n for _, n in stacks)
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    for frames, n in stacks:
        for name in {short(f) for f in frames}:
            inclusive[name] += n
        if frames:
            own[short(frames[-1])] += n
        area = next(
            (label for label, rx in AREAS for f in reversed(frames) if rx.search(f)), "other"
        )
        areas[area] += n

    def show(title: str, counts: Counter[str], top: int) -> None:
        print(f"\n{title}")
        for name, n in counts.most_common(top):
            print(f"  {100 * n / total:5.1f}%  {name}")

    print(f"{total} samples")
    show("by area (innermost matching frame)", areas, len(AREAS) + 1)
    show("inclusive", inclusive, args.top)
    show("self", own, args.top)


if __name__ == "__main__":
    main()
