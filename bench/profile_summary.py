"""Summarise a py-spy ``--format raw`` profile (collapsed stacks) written by ``--profile``.

Run: ``python bench/profile_summary.py bench/results/profile-intake-router.txt [--top 25] [--thread MainThread]``

Prints, per thread, the share of samples, then the functions with the most samples on the
stack (inclusive) and at the top of the stack (self), as a share of the thread's samples.
The same file opens in https://www.speedscope.app (it reads collapsed stacks) as a flame graph.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict
from pathlib import Path

THREAD = re.compile(r"^(?:process \d+:\")?.*?thread \(?(0x[0-9A-Fa-f]+)\)?")


def parse(path: Path) -> dict[str, list[tuple[list[str], int]]]:
    threads: dict[str, list[tuple[list[str], int]]] = defaultdict(list)
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = "all"
        if frames and frames[0].startswith(("thread", "process")):
            thread = frames.pop(0)
            if frames and frames[0].startswith("thread"):
                thread = frames.pop(0)
        threads[thread].append((frames, int(count)))
    return threads


def short(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)"
    match = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not match:
        return frame
    name, file = match.groups()
    for marker in ("site-packages/", "/router/", "/lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{name} ({file})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--thread", help="only threads whose label contains this")
    args = parser.parse_args()
    threads = parse(args.profile)
    total = sum(c for stacks in threads.values() for _, c in stacks)
    print(f"{total} samples")
    for thread, stacks in sorted(threads.items(), key=lambda kv: -sum(c for _, c in kv[1])):
        samples = sum(c for _, c in stacks)
        print(f"  {samples / total:6.1%}  {thread}")
    for thread, stacks in sorted(threads.items(), key=lambda kv: -sum(c for _, c in kv[1])):
        if args.thread and args.thread not in thread:
            continue
        samples = sum(c for _, c in stacks)
        if samples / total < 0.05:
            continue
        inclusive: Counter[str] = Counter()
        own: Counter[str] = Counter()
        for frames, count in stacks:
            names = [short(f) for f in frames]
            for name in set(names):
                inclusive[name] += count
            if names:
                own[names[-1]] += count
        print(f"\n== {thread}: {samples} samples")
        print("-- inclusive")
        for name, count in inclusive.most_common(args.top):
            print(f"  {count / samples:6.1%}  {name}")
        print("-- self")
        for name, count in own.most_common(args.top):
            print(f"  {count / samples:6.1%}  {name}")


if __name__ == "__main__":
    main()
