"""A short SIGKILL soak (bench/soak.py records the long one in docs/operations.md):
the daemon killed at random moments under mixed traffic loses no acknowledged change,
duplicates none, always starts again, keeps its journal's chain whole and comes back
halted after an acknowledged kill."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from .daemonproc import venue_process

BENCH = Path(__file__).resolve().parent.parent / "bench" / "soak.py"


def _soak_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("desk_soak", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["desk_soak"] = module
    spec.loader.exec_module(module)
    return module


def test_eight_sigkill_cycles_lose_nothing(tmp_path: Path) -> None:
    soak = _soak_module()
    with venue_process() as url:
        result = soak.soak(tmp_path, url, cycles=8, seed=7)
    assert result.problems == []
    assert (result.cycles, result.lost, result.duplicated, result.failed_starts,
            result.damaged, result.wrong_mode) == (8, 0, 0, 0, 0, 0)
    assert result.acknowledged >= 8
