"""Building a bridge from its config, and the desk's responses to a press and a loss.

The integrator's whole wiring (docs/hardware.md "Integration")::

    on_press, on_loss = desk_callbacks(config.button, kill=desk.kill, report=desk.report)
    bridge = create_bridge(config.button, on_press=on_press, on_loss=on_loss,
                           wall_clock=desk.wall)
    await nursery.start(supervise, bridge, config.supervision, desk.report, status)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import serial
from gpiozero import Factory

from actors.base import Finding, Report

from .config import (
    ButtonConfig,
    GpioButtonConfig,
    SerialLineButtonConfig,
    SerialModemButtonConfig,
)
from .core import ButtonBridge, Callback
from .gpio import GpioBridge
from .serial_line import SerialLineBridge
from .serial_modem import ModemLineBridge

log = logging.getLogger("desk.button")


class Kill(Protocol):
    """``supervisor.runtime.desk.Desk.kill``."""

    def __call__(self, reason: str, *, actor: str, source: str,
                 incident_class: str | None = None) -> Awaitable[Any]: ...


def desk_callbacks(
    config: ButtonConfig,
    *,
    kill: Kill,
    report: Callable[[Report], Awaitable[None]],
) -> tuple[Callback, Callback]:
    """``(on_press, on_loss)`` for a bridge of ``config``.

    A press is ``kill(cause, actor="button:<backend>", source="button")``: the same
    executor as ``deskctl kill``, a ``button-press`` P0 (playbook 01 killswitch step 01:
    "endpoint or physical button — both are equivalent"). A loss follows ``on_loss``, and
    is never recorded as a press: ``kill`` pulls the switch as a ``button-lost`` P0;
    ``page`` opens a ``button-degraded`` P1 (the runtime pages every P0/P1 it opens);
    ``ignore`` a log line only.
    """
    actor = f"button:{config.backend}"

    async def on_press(cause: str) -> None:
        await kill(cause, actor=actor, source="button")

    async def on_loss(cause: str) -> None:
        match config.on_loss:
            case "kill":
                await kill(f"kill-switch button lost: {cause}", actor=actor, source="button",
                           incident_class="button-lost")
            case "page":
                await report(Finding(
                    actor=actor, incident_class="button-degraded", scope=actor,
                    summary=f"kill-switch button lost, the desk cannot be halted from it: "
                            f"{cause}",
                    evidence={"backend": config.backend, "cause": cause}))
            case "ignore":
                log.warning("kill-switch button lost (on_loss = ignore): %s", cause)

    return on_press, on_loss


def create_bridge(
    config: ButtonConfig,
    *,
    on_press: Callback,
    on_loss: Callback,
    wall_clock: Callable[[], float] | None = None,
    pin_factory: Factory | None = None,
    open_port: Callable[[], serial.SerialBase] | None = None,
) -> ButtonBridge:
    """The bridge for ``config``; nothing is opened until its ``run`` starts.

    ``pin_factory`` (GPIO) and ``open_port`` (serial) replace the real hardware with a
    stand-in (``simulators/buttons.py``); leave them ``None`` in production.
    """
    match config:
        case GpioButtonConfig():
            return GpioBridge(config, on_press=on_press, on_loss=on_loss,
                              pin_factory=pin_factory, wall_clock=wall_clock)
        case SerialModemButtonConfig():
            return ModemLineBridge(config, on_press=on_press, on_loss=on_loss,
                                   open_port=open_port, wall_clock=wall_clock)
        case SerialLineButtonConfig():
            return SerialLineBridge(config, on_press=on_press, on_loss=on_loss,
                                    open_port=open_port, wall_clock=wall_clock)
    raise TypeError(f"unknown button config {type(config).__name__}")
