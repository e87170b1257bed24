"""playbook 06 principle 02 "severity drives response": a finding cannot lower its class's
severity; where the playbook itself grades by scope, the grading is a table row beside
the class (supervisor/core/desk.py GRADES), not a per-finding override."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.base import Finding
from supervisor.core.desk import GRADES, graded_severity

from .deskenv import open_desk


@pytest.mark.parametrize(("cls", "scope", "severity"), [
    ("stale-data", "symbol:AAPL", "P2"),  # playbook 03 missing-data Q1 YES: one symbol
    ("stale-data", "vendor:primary", "P2"),  # Q3 YES: failed over to a healthy backup
    ("stale-data", "feed", "P0"),  # both vendors down: the class's own
    ("alerts-spam", "alerts:parent:incident:INC-1", "P2"),
    ("alerts-spam", "alerts:storm", "P1"),
    ("risk-breach", "limit:max_position:AAPL", "P0"),
    ("no-such-class", "x", "P0"),  # unknown is the worse case
])
def test_the_grade_is_the_class_or_its_table_row(cls: str, scope: str, severity: str) -> None:
    assert graded_severity(cls, scope) == severity


def test_every_grade_row_says_why_from_the_playbook() -> None:
    assert GRADES and all(why.startswith("playbook ") for _, _, _, why in GRADES)


async def test_a_finding_cannot_lower_its_class_severity_only_raise_it(tmp_path: Path) -> None:
    async with open_desk(tmp_path, ("alpha",)) as env:
        lowered = env.desk.policy(Finding(actor="x", incident_class="risk-breach",
                                          scope="limit:var_1d", summary="s", severity="P2"))
        raised = env.desk.policy(Finding(actor="x", incident_class="config-drift",
                                         scope="config:a", summary="s", severity="P0"))
        graded = env.desk.policy(Finding(actor="freshness", incident_class="stale-data",
                                         scope="symbol:AAPL", summary="s"))
    assert (lowered.severity, raised.severity, graded.severity) == ("P0", "P0", "P2")
