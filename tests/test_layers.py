"""The daemon's code never loads the simulated world: simulators may use the product,
never the other way round (docs/architecture.md "Where things are")."""

from __future__ import annotations

import subprocess
import sys

PRODUCTION = ["supervisor.cli", "supervisor.daemon", "supervisor.deskctl", "supervisor.metrics",
              "supervisor.runtime", "supervisor.control", "supervisor.gate", "hardware"]


def test_production_modules_import_no_simulator() -> None:
    code = ("import sys\n"
            f"for m in {PRODUCTION!r}: __import__(m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'simulators'))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_an_unknown_demo_scenario_is_a_usage_error_naming_the_scenarios() -> None:
    done = subprocess.run([sys.executable, "-m", "supervisor.cli", "demo", "--scenario",
                           "meteor"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "unknown scenario 'meteor'; scenarios: " in done.stderr
