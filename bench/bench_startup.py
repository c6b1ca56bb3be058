"""Start-up time of `router` commands against a bare `python -c pass`, in the same run.

Runs each command (and the bare interpreter) ``--runs`` times, interleaved round by round so
that machine noise hits every command alike, from the repository root with the shipped
rules.yaml, and prints the median wall time of each beside the bare interpreter's: the
difference is what the router itself costs. Targets (issue 16, A1), above the bare start:
``--help`` and ``--version`` at most 0.15 s; ``check``, ``test`` and ``render`` on the shipped
configuration at most 0.45 s. Exit status 1 when a command fails or a target is missed.

    python bench/bench_startup.py [--runs 10] [--baseline /path/to/main] [--json bench/results/startup.json]

A command that exits non-zero invalidates the run (a fast failure is not a fast start).
Installed third-party plugins are not loaded (``ROUTER_LOAD_PLUGINS=''``) unless
``--with-plugins``: their import time is theirs. Wall time on a shared machine moves with its
load; the CPU columns (user + system time of each run) move much less.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (label, argv after the interpreter, target in seconds above `python -c pass` or None)
ROUTER = ["-c", "from router.cli import main; main()"]
COMMANDS: list[tuple[str, list[str], float | None]] = [
    ("python -c pass", ["-c", "pass"], None),
    ("router --help", [*ROUTER, "--help"], 0.15),
    ("router --version", [*ROUTER, "--version"], 0.15),
    ("router check", [*ROUTER, "check"], 0.45),
    ("router test EVENT", [*ROUTER, "test", "examples/planet_completed.json"], 0.45),
    ("router test --cases", [*ROUTER, "test", "--cases", "examples/cases.yaml"], 0.45),
    (
        "router render --rule",
        [*ROUTER, "render", "--rule", "planet-completed", "--event", "examples/planet_completed.json"],
        0.45,
    ),
]


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one run of ``python argv``; raises when it exits non-zero.

    CPU (user + system of the child) moves far less than wall time on a shared machine.
    """
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    # -P: the working directory (this checkout) is not put on sys.path, so PYTHONPATH decides
    # which checkout's router runs.
    done = subprocess.run([sys.executable, "-P", *argv], cwd=ROOT, env=env, capture_output=True, timeout=60)
    elapsed = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"BENCHMARK INVALID: {argv} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return elapsed, cpu


def variant_env(checkout: Path, cache: Path, *, with_plugins: bool) -> dict[str, str]:
    """The environment of a run of the router in ``checkout``, with its own load cache."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(checkout)
    env["ROUTER_CACHE"] = str(cache)  # two checkouts never read each other's cache entries
    env.pop("ROUTER_CONFIG", None)
    if not with_plugins:  # the router's own cost: built-ins only, not what else the venv installed
        env["ROUTER_LOAD_PLUGINS"] = ""
    # As an installed package runs: with bytecode caches (the warm-up run writes them, under a
    # temporary prefix rather than in the checkouts). Under PYTHONDONTWRITEBYTECODE every module
    # would be compiled from source on every run.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(cache.parent / "pycache")
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs of each command (default 10)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "startup.json")
    parser.add_argument(
        "--with-plugins", action="store_true", help="load every installed plugin (default: ROUTER_LOAD_PLUGINS='')"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout of the router (e.g. the main branch) to run the same commands with, in the same"
        " rounds, for a before/after comparison under the same load",
    )
    args = parser.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="router-bench-startup-"))
    env = variant_env(ROOT, cache / "this", with_plugins=args.with_plugins)
    commands = [(label, argv, target, env) for label, argv, target in COMMANDS]
    if args.baseline is not None:
        base_env = variant_env(args.baseline.resolve(), cache / "baseline", with_plugins=args.with_plugins)
        commands += [(f"{label} [baseline]", argv, None, base_env) for label, argv, _ in COMMANDS[1:]]
    for _, argv, _, variant in commands:  # warm-up: bytecode, template cache, page cache
        run_once(argv, variant)
    times: dict[str, list[float]] = {label: [] for label, _, _, _ in commands}
    cpu: dict[str, list[float]] = {label: [] for label, _, _, _ in commands}
    for _ in range(args.runs):
        for label, argv, _, variant in commands:
            wall, used = run_once(argv, variant)
            times[label].append(wall)
            cpu[label].append(used)
    base = statistics.median(times["python -c pass"])
    cpu_base = statistics.median(cpu["python -c pass"])
    missed = []
    rows = []
    print(
        f"{'command':35} {'median s':>9} {'min s':>7} {'max s':>7} {'above bare s':>13} {'x bare':>7}"
        f" {'CPU s':>6} {'CPU above':>10} {'target':>8}"
    )
    for label, _, target, _ in commands:
        median = statistics.median(times[label])
        cpu_median = statistics.median(cpu[label])
        above = median - base
        ok = target is None or above <= target
        if not ok:
            missed.append(label)
        shown_target = "-" if target is None else f"<={target:.2f}{'' if ok else ' MISS'}"
        print(
            f"{label:35} {median:9.3f} {min(times[label]):7.3f} {max(times[label]):7.3f}"
            f" {above:13.3f} {median / base:7.1f} {cpu_median:6.3f} {cpu_median - cpu_base:10.3f} {shown_target:>8}"
        )
        rows.append(
            {
                "command": label,
                "median": median,
                "above_bare": above,
                "cpu_median": cpu_median,
                "target": target,
                "runs": times[label],
                "cpu_runs": cpu[label],
            }
        )
    load = os.getloadavg()
    print(f"{args.runs} runs each, interleaved; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows, "loadavg": load}, indent=2))
    if missed:
        print(f"targets missed: {', '.join(missed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
