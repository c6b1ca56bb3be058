"""Scenario 5, scale: 10,000 rules and 1,000 templates against a 10-rule configuration.

Run: ``python bench/bench_scale.py [--rules 10000] [--templates 1000] [--events 10000] [--rounds 3] [--quick]``
(``--load-only``: only the load figures of the large configuration, per phase; no broker needed)

Three figures, each measured for the large configuration and for a 10-rule one (the
baseline) in the same run, rounds alternating:

- ``load s``: loading, validating and compiling the configuration (rules.yaml parsed and
  checked against the plugins' models, every template compiled, the rule index built), i.e.
  ``router.runtime.runtime.build_runtime``, in a fresh process, twice per round: *cold* (a new
  workspace: nothing in ``.router/cache``) and *warm* (with the cache the cold load wrote: a
  restart, or ``router serve`` after ``router check``); wall-clock seconds, and CPU seconds of
  the loading process, steadier on a shared machine, and of the worker processes it forked to
  compile templates (a cold load of many templates), with the same per phase (rules.yaml,
  templates, rule index);
- ``idle RSS MB``: resident memory of `router serve` (RabbitMQ, `--log-level WARNING`) 3 s
  after it became ready, with nothing to do (it starts warm: after the loads above);
- ``intake ev/s``: scenario 1 (bench_intake.py) with each configuration: N events queued, each
  matching exactly one rule whose channel is ``null``.

The large configuration is multi-tenant: rule i routes one of five event types for tenant
``t<i>`` (``data.tenant``), half of them with a threshold too, and uses template ``tpl<i %
1000>``; each template has its own title and body blocks. Writes bench/results/scale.json.
Targets: load <= 2 s, idle RSS <= 150 MB, intake within 20% of the 10-rule figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
from typing import Any

import bench_intake
import harness
from harness import check, fmt

LOAD_SNIPPET = """
import json, os, sys, time
import router.runtime.runtime as runtime_module
from router.plugins.manager import build_registry, get_plugin_manager
registry = build_registry(get_plugin_manager())
phases = {}
def timed(owner, name, label):
    function = getattr(owner, name)
    def measured(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            phases[label] = [time.perf_counter() - wall, time.process_time() - cpu]
    setattr(owner, name, measured)
timed(runtime_module, "load_config", "rules_yaml")
timed(runtime_module.Templates, "compile_all", "templates")
timed(runtime_module, "RuleIndex", "index")
started, cpu = time.perf_counter(), time.process_time()
runtime = runtime_module.build_runtime(sys.argv[1], registry)
elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
children = os.times()
print(json.dumps({
    "seconds": elapsed,
    "cpu_seconds": cpu,
    "worker_cpu_seconds": children.children_user + children.children_system,
    "phases": phases,
    "rules": len(runtime.config.rules),
}))
"""
PHASES = ("rules_yaml", "templates", "index")


def template_source(k: int) -> str:
    return (
        "{% block title %}[" + str(k) + "] {{ data.user.name }} completed {{ data.planet.name }}{% endblock %}\n"
        "{% block body %}Template " + str(k) + ": {{ data.user.name }} finished {{ data.planet.name }} "
        "(difficulty {{ data.planet.difficulty }}){% if data.user.tier == 'gold' %}, a gold member{% endif %}.\n"
        "id={{ event.id }} ts={{ data.ts }}{% endblock %}\n"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=10_000, help="rules in the large configuration (default 10000)")
    parser.add_argument("--templates", type=int, default=1000, help="templates in it (default 1000)")
    parser.add_argument("--events", type=int, default=10_000, help="events per intake round (default 10000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--prefetch", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3000 events, 2 rounds")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders")
    parser.add_argument(
        "--load-only",
        action="store_true",
        help="only the load figures (cold and warm, per phase), large configuration only; no broker needed",
    )
    args = parser.parse_args()
    if args.quick:
        args.events, args.rounds = 3000, 2
    return args


def workspace(rules: int, templates: int, topology: harness.Topology, n: int) -> harness.Workspace:
    sources = {f"tpl{k}": template_source(k) for k in range(templates)} if templates > 1 else None
    return harness.make_workspace(
        broker=topology.broker_config(),
        channels={"sink": {"type": "null", "expect": n}},
        rules=harness.tenant_rules(rules, channel="sink", templates=templates),
        templates=sources,
    )


def load_time(config: str) -> dict[str, Any]:
    """Load ``config`` twice, each in a fresh process: cold (a new workspace, nothing cached) and warm
    (the cache the first load wrote in ``.router/cache``: a restart, or ``router serve`` after ``router check``)."""
    cold, warm = load_once(config), load_once(config)
    figures: dict[str, Any] = {}
    for kind, load in (("cold", cold), ("warm", warm)):
        figures[f"{kind}_s"] = load["seconds"]
        figures[f"{kind}_cpu_s"] = load["cpu_seconds"]
        figures[f"{kind}_worker_cpu_s"] = load["worker_cpu_seconds"]  # forked template compilers (cold)
        figures[f"{kind}_phases"] = load["phases"]  # phase -> [wall s, CPU s of the loading process]
    return figures


def describe_load(load: dict[str, Any]) -> str:
    """One line: cold and warm wall s, CPU s (of the loader, and of its template workers), and per phase."""
    parts = []
    for kind in ("cold", "warm"):
        phases = ", ".join(
            f"{name} {load[f'{kind}_phases'][name][0]:.2f}/{load[f'{kind}_phases'][name][1]:.2f}"
            for name in PHASES
            if name in load[f"{kind}_phases"]
        )
        parts.append(
            f"{kind} {load[f'{kind}_s']:.2f} s (CPU {load[f'{kind}_cpu_s']:.2f} + workers "
            f"{load[f'{kind}_worker_cpu_s']:.2f}; wall/CPU: {phases})"
        )
    return "load " + "; ".join(parts)


def load_once(config: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", LOAD_SNIPPET, config],
        capture_output=True,
        text=True,
        timeout=300,
        env={**harness.os.environ, "ROUTER_LOAD_PLUGINS": "router-bench-plugin"},
    )
    check(out.returncode == 0, f"loading {config} failed:\n{out.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


async def idle_rss(space: harness.Workspace) -> dict[str, float]:
    router = harness.RouterProcess(space, broker_url=harness.AMQP_URL, loop="auto")
    started = harness.time.monotonic()
    try:
        await router.wait_ready(timeout=300)
        ready = harness.time.monotonic() - started
        await asyncio.sleep(3)
        rss = router.memory()["rss"]
    finally:
        code = router.stop()
    check(code == 0, f"router exited with {code}:\n{router.log_tail()}")
    return {"rss_mb": rss / 2**20, "ready_s": ready}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    harness.ensure_plugin()
    configs = {"large": (args.rules, args.templates), "small": (10, 1)}
    results: dict[str, dict[str, list[Any]]] = {name: {"load": [], "idle": [], "intake": []} for name in configs}
    for round_number in range(1, args.rounds + 1):
        for name, (rules, templates) in configs.items():
            topology = harness.Topology.fresh(f"scale-{name}")
            space = workspace(rules, templates, topology, args.events)
            try:
                load = await asyncio.to_thread(load_time, str(space.config))
                results[name]["load"].append(load)
                await topology.declare()
                idle = await idle_rss(space)  # `router serve` finds the cache the loads wrote
                results[name]["idle"].append(idle)
                print(
                    f"round {round_number}: {name}: {describe_load(load)}, "
                    f"ready after {idle['ready_s']:.1f} s, idle RSS {idle['rss_mb']:.1f} MB",
                    flush=True,
                )
            finally:
                await topology.delete()
                if not args.keep:
                    shutil.rmtree(space.root, ignore_errors=True)
            intake = await bench_intake.router_round(
                args.events,
                prefetch=args.prefetch,
                rules=rules,
                loop="auto",
                log_level="WARNING",
                profile=None,
                keep=args.keep,
                workspace_factory=lambda topology, n, r=rules, t=templates: workspace(r, t, topology, n),
            )
            results[name]["intake"].append(intake)
            print(f"round {round_number}: {name}: intake {fmt(intake['events_per_s'])} events/s", flush=True)
    summary: dict[str, dict[str, Any]] = {}
    for name, figures in results.items():
        summary[name] = {
            "rules": configs[name][0],
            "templates": configs[name][1],
            **{
                f"median_load_{key}": harness.median([x[key] for x in figures["load"]])
                for key in ("cold_s", "cold_cpu_s", "cold_worker_cpu_s", "warm_s", "warm_cpu_s", "warm_worker_cpu_s")
            },
            "median_ready_s": harness.median([x["ready_s"] for x in figures["idle"]]),
            "median_idle_rss_mb": harness.median([x["rss_mb"] for x in figures["idle"]]),
            "median_intake_events_per_s": harness.median([x["events_per_s"] for x in figures["intake"]]),
            "median_intake_cpu_us_per_event": harness.median([x["cpu_us_per_event"] for x in figures["intake"]]),
            "rounds": figures,
        }
    large, small = summary["large"], summary["small"]
    rows = []
    for name in ("small", "large"):
        s = summary[name]
        rows.append(
            [
                f"{s['rules']} rules, {s['templates']} templates",
                f"{s['median_load_cold_s']:.2f} ({s['median_load_cold_cpu_s']:.2f} + {s['median_load_cold_worker_cpu_s']:.2f})",
                f"{s['median_load_warm_s']:.2f} ({s['median_load_warm_cpu_s']:.2f})",
                f"{s['median_ready_s']:.1f}",
                fmt(s["median_idle_rss_mb"], 1),
                fmt(s["median_intake_events_per_s"]),
                fmt(s["median_intake_cpu_us_per_event"]),
                f"{s['median_intake_events_per_s'] / small['median_intake_events_per_s']:.2f}x",
            ]
        )
    harness.print_table(
        f"Scale: {args.rounds} rounds, intake {args.events} events (medians); base = the 10-rule configuration",
        [
            "configuration",
            "load cold s (CPU + workers' CPU)",
            "load warm s (CPU)",
            "ready s",
            "idle RSS MB",
            "intake ev/s",
            "CPU us/ev",
            "intake vs base",
        ],
        rows,
    )
    ratio = large["median_intake_events_per_s"] / small["median_intake_events_per_s"]
    met = {
        "load_cold": large["median_load_cold_s"] <= 2.0,
        "load_warm": large["median_load_warm_s"] <= 2.0,
        "idle_rss": large["median_idle_rss_mb"] <= 150,
        "intake": ratio >= 0.8,
    }
    for kind in ("cold", "warm"):
        figure = large[f"median_load_{kind}_s"]
        print(f"target load <= 2 s ({kind}): {'MET' if met[f'load_{kind}'] else 'MISSED'} ({figure:.2f} s)")
    print(f"target idle RSS <= 150 MB: {'MET' if met['idle_rss'] else 'MISSED'} ({large['median_idle_rss_mb']:.1f} MB)")
    print(f"target intake within 20% of 10 rules: {'MET' if met['intake'] else 'MISSED'} ({ratio:.2f}x)")
    return {
        "rules": args.rules,
        "templates": args.templates,
        "events": args.events,
        "rounds": args.rounds,
        "results": summary,
        "target": {"load_s_max": 2.0, "idle_rss_mb_max": 150, "intake_ratio_min": 0.8, "met": met},
    }


def run_loads(args: argparse.Namespace) -> dict[str, Any]:
    """``--load-only``: the large configuration's cold and warm loads, ``--rounds`` times."""
    loads = []
    for round_number in range(1, args.rounds + 1):
        space = workspace(args.rules, args.templates, harness.Topology.fresh("scale-load"), args.events)
        try:
            load = load_time(str(space.config))
        finally:
            if not args.keep:
                shutil.rmtree(space.root, ignore_errors=True)
        loads.append(load)
        print(f"round {round_number}: {describe_load(load)}", flush=True)
    keys = [key for key in loads[0] if not key.endswith("_phases")]
    medians = {f"median_load_{key}": harness.median([load[key] for load in loads]) for key in keys}
    for kind in ("cold", "warm"):
        print(
            f"median {kind}: {medians[f'median_load_{kind}_s']:.2f} s, CPU {medians[f'median_load_{kind}_cpu_s']:.2f}"
            f" + workers {medians[f'median_load_{kind}_worker_cpu_s']:.2f}"
        )
    met = medians["median_load_cold_s"] <= 2.0
    print(f"target load <= 2 s (cold): {'MET' if met else 'MISSED'} ({medians['median_load_cold_s']:.2f} s)")
    return {"rules": args.rules, "templates": args.templates, "rounds": loads, **medians, "target_met": met}


def main() -> None:
    args = parse_args()
    if args.load_only:
        harness.ensure_plugin()
        harness.write_results("scale-load", run_loads(args))
        return
    document = harness.run_async(run(args))
    harness.write_results("scale-quick" if args.quick else "scale", document)


if __name__ == "__main__":
    main()
