"""The cost of a stopped template render: the hostile inputs of ``tests/test_template_budget.py``
(issue 11's reproductions, a review's findings, and every other way a template or a booking can
grow a render; ``BOOKER``: saved templates given a booker's notes), each
stopped by the budget, beside an ordinary template's render measured in the same run; and the
cost of compiling the largest templates allowed (``MAX_TOKENS``), as at a save or a worker's
first send.

    .venv/bin/python -m bench.templates [--repeat 5]

For each input: the rendering thread's CPU time (worst of ``--repeat`` renders, the compiled
template cached as it is after the first send) and the peak memory traced by tracemalloc during
one render (a separate pass: tracing slows the code it traces). Target: the worst stopped render
(and the worst compile) under 50 ms of CPU and 10 MB. Exit status 1 when missed.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from collections.abc import Callable

from linktime import plugins
from linktime.models import BookingEvent, sample_event
from linktime.template_budget import MAX_TOKENS, TemplateBudgetError
from linktime.templating import render

from bench.report import Figure, write_json
from tests.test_template_budget import (
    BOOKER,
    BOOKER_LIST,
    CENTER,
    COMPARING,
    HOSTILE,
    LONG_NOTES,
    LONG_SOURCES,
    NESTED_RANGES,
    NOTES_SQUARED,
    with_booking,
    with_notes,
)

TARGET_CPU_MS = 50.0
TARGET_PEAK_MB = 10.0


def ordinary() -> tuple[str, BookingEvent]:
    """The longest built-in template text (an email body), for the baseline."""
    texts = [
        value
        for template in plugins.load().templates.values()
        for step in template.steps
        for value in step.settings.values()
        if isinstance(value, str) and "{{" in value
    ]
    return max(texts, key=len), sample_event()


def cpu_ms(run: Callable[[], object], repeat: int) -> float:
    worst = 0.0
    for _ in range(repeat):
        start = time.thread_time()
        run()
        worst = max(worst, (time.thread_time() - start) * 1000)
    return worst


def peak_mb(run: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def stopped(source: str, event: BookingEvent) -> Callable[[], object]:
    def run() -> object:
        try:
            render(source, event)
        except TemplateBudgetError as exc:
            return exc
        raise SystemExit(f"not stopped: {source!r}")

    return run


# The largest templates allowed (MAX_TOKENS), by the shape that costs most to compile per token:
# (unit, its tokens).
ALLOWED_SHAPES = {
    "fields": ("{{ booking.uid }}", 5),
    "ifs": ("{% if 1 %}x{% endif %}", 8),
    "macros": ("{% macro m() %}x{% endmacro %}", 10),
    "comparisons": ("{{ booking.uid == booking.uid }}", 9),
}


def compiled_first(unit: str, tokens: int) -> Callable[[], object]:
    """Render a template of ``unit`` up to ``MAX_TOKENS`` never rendered before, so it is
    compiled (the cost at save, and in each worker on first use)."""
    fresh = iter(range(10**9))

    def run() -> object:
        # A run of text (one token) makes each source new to the compiled-template cache.
        return render(f"{next(fresh)}" + unit * ((MAX_TOKENS - 1) // tokens), sample_event())

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", help="write the figures and verdicts to this file")
    args = parser.parse_args()

    base_source, base_event = ordinary()
    render(base_source, base_event)  # compiled once, as after the first send

    def baseline() -> object:
        return render(base_source, base_event)

    paid = sample_event("payment.received")
    booking = sample_event().booking.model_dump()
    absurd_amount = sample_event(
        booking={**booking, "payment": {**booking["payment"], "amount": "1e999999"}}
    )
    inputs = {
        "issue: nested range(500) x3": (NESTED_RANGES, sample_event()),
        'issue: "x"|center(50000000)': (CENTER, sample_event()),
        "issue: notes x notes, 6,000-char notes": (NOTES_SQUARED, LONG_NOTES),
        **{name: (source, LONG_NOTES) for name, source in HOSTILE.items()},
        **{
            f"booker: {name}": (source, with_notes(notes))
            for name, (source, notes) in BOOKER.items()
        },
        "booker: an amount of 1E+999999, |int": ("{{ payment.amount|int }}", absurd_amount),
        **{f"review 2: {name}": (source, paid) for name, source in COMPARING.items()},
        "review 2: booker: amount in 30,000 floats": (
            BOOKER_LIST,
            with_booking(foo=[1e300] * 30000),
        ),
        # Refused before compiling: a render re-reads the source (a refusal is not cached).
        **{f"review 2: 50,000 chars of {name}": (src, paid) for name, src in LONG_SOURCES.items()},
    }
    # What this process imported (the tests, Hypothesis, Litestar) is moved out of the garbage
    # collector's reach: a full collection of it costs ~80 ms of whichever render triggers it
    # (`sum`, allocating 3,000 lists, did), a cost of the process' heap, not of the template.
    gc.freeze()
    rows = [("baseline: built-in email body", cpu_ms(baseline, args.repeat), peak_mb(baseline))]
    for name, (source, event) in inputs.items():
        run = stopped(source, event)
        run()  # compiled, and checked that it is stopped
        rows.append((name, cpu_ms(run, args.repeat), peak_mb(run)))

    for name, (unit, tokens) in ALLOWED_SHAPES.items():
        run = compiled_first(unit, tokens)
        rows.append(
            (f"compiled: {MAX_TOKENS} tokens of {name}", cpu_ms(run, args.repeat), peak_mb(run))
        )

    print(f"{'render':<46} {'CPU ms (worst)':>14} {'peak MB':>8}")
    for name, ms, mb in rows:
        print(f"{name:<46} {ms:>14.2f} {mb:>8.2f}")
    worst_ms = max(ms for _, ms, _ in rows[1:])
    worst_mb = max(mb for _, _, mb in rows[1:])
    ok = worst_ms < TARGET_CPU_MS and worst_mb < TARGET_PEAK_MB
    print(
        f"\nworst stopped render: {worst_ms:.2f} ms CPU, {worst_mb:.2f} MB peak "
        f"(baseline {rows[0][1]:.2f} ms, {rows[0][2]:.2f} MB); target < {TARGET_CPU_MS:g} ms "
        f"and < {TARGET_PEAK_MB:g} MB: {'PASS' if ok else 'FAIL'}"
    )
    if args.json:
        write_json(
            args.json,
            [
                Figure(
                    "templates",
                    "worst stopped render, CPU",
                    worst_ms,
                    "ms",
                    f"< {TARGET_CPU_MS:g}",
                    worst_ms < TARGET_CPU_MS,
                ),
                Figure(
                    "templates",
                    "worst stopped render, peak memory",
                    worst_mb,
                    "MB",
                    f"< {TARGET_PEAK_MB:g}",
                    worst_mb < TARGET_PEAK_MB,
                ),
                Figure(
                    "templates",
                    "ordinary render (built-in email body), CPU",
                    rows[0][1],
                    "ms",
                    "",
                    None,
                ),
            ],
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
