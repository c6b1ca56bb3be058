#!/usr/bin/env bash
# Every end-to-end benchmark, one after the other (they must not run at the same time),
# with the options the figures in bench/README.md were measured with. About 25 minutes.
# Output goes to the terminal and to bench/results/run_all.log; figures to bench/results/*.json.
# Pass --quick for a smoke run of each (a few minutes in all). With ROUTER_BENCH_ACTIVITY=off every
# scenario runs with `activity: false`; its figures go to bench/results/activity-off/.
set -euo pipefail
cd "$(dirname "$0")/.."
results=bench/results
if [[ "${ROUTER_BENCH_ACTIVITY:-}" =~ ^(off|0|false)$ ]]; then results=bench/results/activity-off; fi
mkdir -p "$results"
quick=("$@")
{
  python bench/bench_intake.py --info --compare-loops "${quick[@]}"
  python bench/bench_delivery.py --apprise "${quick[@]}"
  python bench/bench_latency.py "${quick[@]}"
  python bench/bench_embedded.py "${quick[@]}"
  python bench/bench_embedded.py --batch 1 --clients 16 --events 5000 "${quick[@]}"
  python bench/bench_scale.py "${quick[@]}"
  python bench/bench_backlog.py "${quick[@]}"
  python bench/bench_alertmanager.py "${quick[@]}"  # skipped when Alertmanager is not installed
} 2>&1 | tee "$results/run_all.log"
