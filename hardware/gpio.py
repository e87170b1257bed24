"""The GPIO kill-switch bridge: a button on one gpiozero input, or two NC channels.

The input is gpiozero's ``DigitalInputDevice``: a ``Button`` without its hold thread,
whose ``close`` would wait out ``hold_time`` (1 s) while the button is held.

How an edge reaches trio (docs/hardware.md): gpiozero calls back from its own thread (one shared
thread for every pin under lgpio; the caller's thread under MockFactory). The callback
only does ``TrioToken.run_sync_soon(self._on_edge, ...)``, which never blocks that
thread; ``_on_edge`` runs on the trio thread, cannot raise, and sets the latch through
``BridgeCore.press``, which starts ``on_press`` in a task. An edge that arrives after the
trio run has ended is dropped (``RunFinishedError``); one from a device already closed
is dropped by its generation number.

Rules: the level is read at start (gpiozero fires nothing for it) and every
``poll_interval_s`` as a backstop for a missed edge; the first edge trips (no
``bounce_time`` is given to gpiozero, since lgpio would delay the event by it); the
latch re-arms only after the contact has been at rest for ``bounce_time_s``. With two
NC channels, either one opening trips, and a disagreement lasting ``discrepancy_s`` is a
lost bridge (a welded contact or a cut wire). A pin error of any kind is a lost bridge;
the device is closed and reopened with backoff.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
from collections.abc import Callable
from functools import partial
from typing import Any

import trio
from gpiozero import DigitalInputDevice, Factory

from .config import GpioButtonConfig
from .core import Backoff, BridgeCore, Callback, describe

log = logging.getLogger("desk.button.gpio")


def load_pin_factory(name: str | None) -> Factory:
    """The gpiozero pin factory called ``name`` (entry point ``gpiozero_pin_factories``);
    ``None``: ``$GPIOZERO_PIN_FACTORY``, else ``lgpio`` (a Raspberry Pi 5). Never sets
    gpiozero's global ``Device.pin_factory``.

    lgpio writes a notification FIFO into the working directory (gpiozero #1106, lg #12):
    the unit needs a writable one (``WorkingDirectory=/run/desk-supervisor``).

    Raises:
        LookupError: no factory of that name is installed.
    """
    wanted = name or os.environ.get("GPIOZERO_PIN_FACTORY") or "lgpio"
    for entry in importlib.metadata.entry_points(group="gpiozero_pin_factories"):
        if entry.name == wanted.lower():
            factory: Factory = entry.load()()
            return factory
    raise LookupError(f"gpiozero pin factory {wanted!r} is not installed")


class GpioBridge:
    """A kill-switch button on one GPIO pin (or two NC channels)."""

    critical = True

    def __init__(
        self,
        config: GpioButtonConfig,
        *,
        on_press: Callback,
        on_loss: Callback,
        pin_factory: Factory | None = None,
        wall_clock: Callable[[], float] | None = None,
    ) -> None:
        """``pin_factory``: use this factory (the caller owns it, e.g. a MockFactory);
        ``None``: load ``config.pin_factory`` at each (re)connection and close it after."""
        self.name = "button:gpio"
        self.config = config
        self.pins = [config.pin] if config.second_pin is None else [config.pin,
                                                                    config.second_pin]
        self.core = BridgeCore("gpio", "+".join(f"GPIO{p}" if isinstance(p, int) else p
                                                for p in self.pins),
                               on_press=on_press, on_loss=on_loss, wall_clock=wall_clock)
        self._factory = pin_factory
        self._owned_factory: Factory | None = None
        self._buttons: list[DigitalInputDevice] = []
        self._token: trio.lowlevel.TrioToken | None = None
        self._generation = 0
        self._disagree_since: float | None = None
        self.core.extra["channels"] = []

    def status(self) -> dict[str, Any]:
        return self.core.status()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch the pin(s) until cancelled; reconnect with backoff after a pin error."""
        self._token = trio.lowlevel.current_trio_token()
        await self.core.serve(self._serve, task_status)

    async def _serve(self) -> None:
        backoff = Backoff(self.config.reconnect_initial_s, self.config.reconnect_max_s)
        while True:
            try:
                try:
                    self._open()
                    await self._watch(backoff)
                finally:
                    self._close()
            except Exception as exc:  # any pin error: the bridge cannot vouch (docs/hardware.md)
                log.warning("gpio %s: %s", self.core.device, describe(exc), exc_info=exc)
                self.core.lose(f"gpio {self.core.device}: {describe(exc)}")
            await trio.sleep(backoff.next())
            self.core.counters["reconnects"] += 1

    # --- the device ----------------------------------------------------------------------

    def _open(self) -> None:
        cfg = self.config
        factory = self._factory
        if factory is None:
            factory = self._owned_factory = load_pin_factory(cfg.pin_factory)
        self._generation += 1
        pull_up = {"up": True, "down": False, "floating": None}[cfg.pull]
        for channel, pin in enumerate(self.pins):
            # is_active means "contact closed": active low with a pull-up, as in gpiozero.
            button = DigitalInputDevice(pin, pull_up=pull_up, active_state=cfg.active_state,
                            bounce_time=None, pin_factory=factory)
            self._buttons.append(button)
            button.when_activated = partial(self._from_gpio_thread, self._generation,
                                            channel, True)
            button.when_deactivated = partial(self._from_gpio_thread, self._generation,
                                              channel, False)
        self.core.connected()
        self._disagree_since = None

    def _close(self) -> None:
        self._generation += 1  # edges still queued for the old devices are dropped
        buttons, self._buttons = self._buttons, []
        for button in buttons:
            with contextlib.suppress(Exception):
                button.when_activated = None
                button.when_deactivated = None
            try:
                button.close()
            except Exception as exc:
                log.warning("gpio %s: closing failed: %s", self.core.device, describe(exc))
        if self._owned_factory is not None:
            factory, self._owned_factory = self._owned_factory, None
            with contextlib.suppress(Exception):
                factory.close()

    def _from_gpio_thread(self, generation: int, channel: int, closed: bool) -> None:
        """gpiozero's thread: hand the edge to trio; never blocks, never raises."""
        token = self._token
        if token is None:
            return
        try:
            token.run_sync_soon(self._on_edge, generation, channel, closed)
        except trio.RunFinishedError:
            pass  # the trio run is over: nobody is left to halt (docs/hardware.md)

    def _pressed(self, closed: bool) -> bool:
        return not closed if self.config.wiring == "nc" else closed

    def _on_edge(self, generation: int, channel: int, closed: bool) -> None:
        """The trio thread: trip on the first edge towards "pressed". Cannot raise."""
        try:
            if generation != self._generation:
                return
            self.core.counters["edges"] += 1
            if self._pressed(closed):
                self.core.press(f"gpio {self.pins[channel]}: {self._what()} (edge)")
        except Exception:  # run_sync_soon must not raise into trio's run loop
            log.exception("gpio %s: edge handling failed", self.core.device)

    def _what(self) -> str:
        return ("contact opened: pressed, or the NC loop is cut" if self.config.wiring == "nc"
                else "contact closed: pressed")

    # --- the poll ------------------------------------------------------------------------

    async def _watch(self, backoff: Backoff) -> None:
        self._check(start=True)
        backoff.reset()
        while True:
            await trio.sleep(self.config.poll_interval_s)
            self._check(start=False)

    def _check(self, *, start: bool) -> None:
        """Read every channel's level (raises on a pin error) and apply the rules."""
        cfg = self.config
        pressed = [self._pressed(bool(b.is_active)) for b in self._buttons]
        now = trio.current_time()
        self.core.extra["channels"] = ["open" if p == (cfg.wiring == "nc") else "closed"
                                       for p in pressed]
        if len(set(pressed)) > 1:
            if self._disagree_since is None:
                self._disagree_since = now
            if now - self._disagree_since >= cfg.discrepancy_s:
                first, second = self.core.extra["channels"]
                self.core.lose(f"gpio {self.core.device}: channels disagree for "
                               f"{now - self._disagree_since:.3f} s (first {first}, second "
                               f"{second}): a contact or a wire is broken")
        else:
            self._disagree_since = None
            self.core.healthy_read()
        if any(pressed):
            which = ", ".join(str(p) for p, hit in zip(self.pins, pressed, strict=True) if hit)
            when = "at start" if start else "seen by the poll, the edge was missed"
            self.core.press(f"gpio {which}: {self._what()} ({when})")
        else:
            self.core.at_rest(cfg.bounce_time_s)
