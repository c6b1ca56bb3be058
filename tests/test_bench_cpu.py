"""The bench plugin's CPU stamps count child processes (bench/router-bench-plugin): work the
router moves into a child, such as the activity writer, is not reported as saved."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

PLUGIN = Path(__file__).resolve().parent.parent / "bench" / "router-bench-plugin" / "router_bench_plugin.py"
_spec = importlib.util.spec_from_file_location("router_bench_plugin_under_test", PLUGIN)
assert _spec is not None and _spec.loader is not None
router_bench_plugin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(router_bench_plugin)  # by path: CI does not install the bench plugin

BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\ntime.sleep(30)\n"


def test_cpu_time_includes_a_running_childs_cpu() -> None:
    child = subprocess.Popen([sys.executable, "-c", BURN])
    try:
        own = time.process_time()
        deadline = time.monotonic() + 20
        while router_bench_plugin.cpu_time() - own < 0.25:  # the child's 0.3 s of CPU, counted while it runs
            assert time.monotonic() < deadline, "the child's CPU never showed in cpu_time()"
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait()
