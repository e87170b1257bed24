"""Summarise py-spy's raw (collapsed) stacks of the daemon: where its CPU goes.

Run: ``python bench/stacks.py FILE`` on the file that ``bench/telemetry_ingest.py
--py-spy FILE`` wrote (``py-spy record --format raw``). Three views, in % of samples:

- by trio task: the frame just under trio's ``unrolled_run`` (which actor or handler);
- inclusive, per function of our code (supervisor/, actors/): samples with that function
  anywhere on the stack, so ``Book.ingest`` includes the listeners it calls;
- by leaf library (where the CPU really is: our code, msgspec, trio, the socket...).

py-spy samples with ``--nonblocking``: cheap, but a sample can catch a half-updated stack,
so read a few % either way as noise.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter


def frame_file(frame: str) -> str:
    return frame.rsplit("(", 1)[-1].rstrip(")").split(":", 1)[0]


def frame_function(frame: str) -> str:
    return frame.rsplit(" (", 1)[0]


def library(frame: str) -> str:
    path = frame_file(frame)
    return path.split("/", 1)[0] if "/" in path else path


def ours(frame: str) -> bool:
    return library(frame) in ("supervisor", "actors")


def summarise(lines: list[str], top: int) -> None:
    total = 0
    by_task: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    by_leaf: Counter[str] = Counter()
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        run = next((i for i, f in enumerate(frames) if f.startswith("unrolled_run ")), None)
        if run is None or run + 1 >= len(frames):
            by_task["(outside any task: trio's loop, startup, threads)"] += n
        else:
            by_task[frame_function(frames[run + 1])] += n
        for name in {frame_function(f) for f in frames if ours(f)}:
            inclusive[name] += n
        by_leaf[library(frames[-1])] += n
    print(f"{total} samples")
    for title, counter in (("by trio task", by_task),
                           ("inclusive, per function of ours", inclusive),
                           ("by leaf library", by_leaf)):
        print(f"  {title}:")
        for key, n in counter.most_common(top):
            print(f"    {100 * n / max(total, 1):5.1f} %  {key}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args(argv)
    with open(args.file) as f:
        summarise(f.readlines(), args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
