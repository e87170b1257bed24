"""The risk limits as the desk keeps them around a halt (playbook 02 risk-breach; playbook
03 post-incident Q3): the limits in force as canonical JSON (journaled with every halt),
how they are looser than those journaled with the halt, the risk actor's notes filed on
their risk-breach incident, and the one-time migration of a halt recorded by an older
version in a side file."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import trio

from actors.risk import Limits, looser
from supervisor.core.desk import DeskState
from supervisor.core.events import AnyEvent, IncidentNoted, LimitsAtHalt

log = logging.getLogger("desk.runtime")


class HaltLimits:
    """``limits`` gives the limits the risk actor enforces now (None: none loaded)."""

    def __init__(
        self,
        state_dir: Path,
        *,
        state: Callable[[], DeskState],
        limits: Callable[[], Limits | None],
        wall: Callable[[], float],
        submit: Callable[[AnyEvent], Awaitable[None]],
    ) -> None:
        self._legacy = state_dir / "limits-at-halt.json"
        self._state = state
        self._limits = limits
        self._wall = wall
        self._submit = submit

    def now(self) -> str:
        """The risk limits in force, as canonical JSON (sorted keys)."""
        return (self._limits() or Limits()).canonical

    def relaxed_since_halt(self) -> list[str]:
        """playbook 03 post-incident Q3: how the limits in force are looser than those
        journaled with the halt ([] when they are not, or are not known: the state
        machine refuses a resume on unknown limits by itself)."""
        recorded = self._state().kill.limits_at_halt
        if recorded is None:
            return []
        try:
            at_halt = msgspec.json.decode(recorded, type=Limits)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # Unknown is the worse case: compare against no looser than nothing at all.
            log.error("the limits journaled with the halt do not decode: %s", exc)
            at_halt = Limits(max_position=0.0, daily_drawdown=0.0, var_1d=0.0,
                             concentration=0.0)
        return looser(self._limits() or Limits(), at_halt)

    def breached(self) -> set[str]:
        """The scopes of the live risk-breach incidents."""
        return {i.scope for i in self._state().incidents
                if i.live and i.incident_class == "risk-breach"}

    async def note_risk(self, text: str) -> None:
        """Journal an auto-flatten line on the risk-breach incident it belongs to."""
        live = [i for i in self._state().incidents
                if i.live and i.incident_class == "risk-breach"]
        if not live:
            log.warning("risk note with no live risk-breach incident: %s", text)
            return
        target = live[-1]
        if text.startswith("auto-flatten "):
            # "auto-flatten AAPL: ..." or "auto-flatten AAPL at alpha: ..."
            symbol = text.removeprefix("auto-flatten ").split(":", 1)[0].split(" ", 1)[0]
            target = next((i for i in live if i.scope == f"limit:max_position:{symbol}"),
                          target)
        await self._submit(IncidentNoted(
            ts=self._wall(), actor="actor:risk", incident_id=target.id, text=text))

    async def migrate_legacy(self) -> None:
        """A halt journaled by a version that kept its limits in a side file: journal
        them from it once (nothing to do when the file is not there: the resume then
        stays refused until the limits are recorded)."""
        try:
            data = await trio.Path(self._legacy).read_bytes()
            limits = msgspec.json.decode(data, type=Limits)
        except FileNotFoundError:
            return
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.error("the limits at the halt in %s cannot be read: %s", self._legacy, exc)
            return
        await self._submit(LimitsAtHalt(
            ts=self._wall(), actor=f"supervisor:migrated from {self._legacy}",
            limits=limits.canonical))
