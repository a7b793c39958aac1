"""Every bench, one after the other, and one table of every figure with its target.

    /work/main/.venv/bin/python bench/run_all.py --quick     # reduced sizes, under 10 minutes
    /work/main/.venv/bin/python bench/run_all.py             # the full sizes (much longer)
    /work/main/.venv/bin/python bench/run_all.py --quick --only latency,templates

Each bench runs as its own process (``python -m bench.NAME ... --json FILE``), its printout
going to a log in a temporary directory (kept, and its path printed, when a target is
missed); a bench that fails to
finish within its bound, or exits without its figures, is a FAIL row naming its log. Quick
figures are for a smoke check of the whole set, not a verdict: the issue's targets are judged
at the full sizes, over several rounds. Exit status 1 when any figure with a target fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # runnable as `python bench/run_all.py` from anywhere
    sys.path.insert(0, str(ROOT))

from bench.report import Figure, read_json  # noqa: E402


@dataclass(frozen=True)
class Bench:
    name: str  # shown in the table
    module: str  # bench.<module>
    full: list[str]  # arguments at the full sizes
    quick: list[str]  # at the reduced sizes of --quick
    bound: float  # seconds allowed at the full sizes; --quick allows a fifth (at least 120)


BENCHES = [
    Bench("webhooks", "webhooks", [], ["--events", "300"], 1800),
    Bench(
        "scheduler",
        "scheduler",
        [],
        ["--pending", "10000,100000", "--fire", "300", "--spread", "5"],
        1800,
    ),
    Bench(
        "scheduler --parked",
        "scheduler",
        ["--parked", "10000"],
        ["--parked", "1000", "--rounds", "2", "--ticks", "10"],
        1800,
    ),
    Bench("templates", "templates", [], ["--repeat", "2"], 600),
    Bench(
        "latency",
        "latency",
        [],
        ["--seconds", "10", "--saturation-events", "300"],
        1200,
    ),
    Bench("memory", "memory", [], ["--events", "2000"], 1800),
    # --quick runs n8n only when it is installed already (--n8n-dir); the full run installs it
    Bench("embedded", "embedded", [], ["--quick"], 3600),
    # --quick: 5,000 reminders due in one second among 50,000 pending
    Bench("burst", "burst", [], ["--quick"], 3600),
]


def run(bench: Bench, quick: bool, work: Path) -> tuple[list[Figure], float]:
    """The bench's figures (or one FAIL figure saying why there are none) and its seconds."""
    slug = bench.name.replace(" ", "").replace("-", "_")
    out, log = work / f"{slug}.json", work / f"{slug}.log"
    bound = max(120.0, bench.bound / 5) if quick else bench.bound
    args = [sys.executable, "-m", f"bench.{bench.module}", *(bench.quick if quick else bench.full)]
    t0 = time.monotonic()
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [*args, "--json", str(out)], cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT
        )
        try:
            code = proc.wait(bound)
        except subprocess.TimeoutExpired:
            # SIGTERM: each bench unwinds through its clean-up (databases, namespaces, processes)
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            code = None
    seconds = time.monotonic() - t0
    if code is None or not out.exists():
        why = f"no figures ({'over ' + f'{bound:.0f} s' if code is None else f'exit {code}'})"
        return [
            Figure(bench.name, f"{why}; log {log}", float("nan"), "", "figures", False)
        ], seconds
    return read_json(out), seconds


def table(rows: list[Figure]) -> str:
    width = max(len(f.name) for f in rows)
    lines = [
        f"| {'bench':<18} | {'figure':<{width}} | {'value':>10} | {'unit':<8} | {'target':<8} "
        "| verdict |",
        f"|{'-' * 20}|{'-' * (width + 2)}|{'-' * 11}:|{'-' * 10}|{'-' * 10}|---------|",
    ]
    for f in rows:
        verdict = "" if f.passed is None else "PASS" if f.passed else "FAIL"
        lines.append(
            f"| {f.bench:<18} | {f.name:<{width}} | {f.value:>10.2f} | {f.unit:<8} "
            f"| {f.target:<8} | {verdict:<7} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes (under 10 minutes)")
    parser.add_argument("--only", help="comma-separated bench names (e.g. latency,templates)")
    args = parser.parse_args()
    chosen = [b for b in BENCHES if not args.only or b.name in args.only.split(",")]
    work = Path(tempfile.mkdtemp(prefix="lt-run-all-"))
    print(
        f"{'quick' if args.quick else 'full'} sizes; {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.2f}; logs in {work}",
        flush=True,
    )
    rows: list[Figure] = []
    try:
        for bench in chosen:
            figures, seconds = run(bench, args.quick, work)
            print(f"{bench.name}: {seconds:.0f} s", flush=True)
            rows += figures
    except KeyboardInterrupt:  # the running bench got the same Ctrl-C and cleans up itself
        print("interrupted", file=sys.stderr)
        return 130
    print(f"\nload average {os.getloadavg()[0]:.2f}\n{table(rows)}")
    failed = [f for f in rows if f.passed is False]
    print(f"\n{len(failed)} of {sum(f.passed is not None for f in rows)} targets missed")
    if failed:
        print(f"every bench's printout is kept in {work}")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
