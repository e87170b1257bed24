"""The engine's book as telemetry tells it: positions, orders, acks, fills, predictions.

Telemetry does not go through the journal (it arrives at hundreds of thousands of events
a second); it lands here, in memory, bounded, and the actors read it. ``ingest`` is
synchronous and cheap: one ``match`` per event.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Sequence

from supervisor.core.protocol import (
    Ack,
    Bar,
    Features,
    Fill,
    Model,
    Order,
    Pnl,
    Position,
    Prediction,
    TelemetryEvent,
)

# Orders and fills are kept for reconciliation and ack tracking; the cap bounds memory
# under a runaway engine (about 200 bytes an order).
MAX_ORDERS = 200_000
MAX_PENDING_ACKS = 50_000
# The kill snapshot keeps the last 10 minutes of predictions (playbook 01 killswitch step
# 03), at most this many: a runaway prediction stream must not make the snapshot slow.
MAX_PREDICTIONS = 100_000

Listener = Callable[[Sequence[TelemetryEvent]], None]


class Book:
    """What the engine reports. Intervals use ``clock`` (the runtime passes trio's, so that
    the tests' autojump clock drives them); event timestamps are the engine's."""

    def __init__(self, *, clock: Callable[[], float],
                 prediction_window_s: float = 600.0) -> None:
        self.clock = clock
        self.positions: dict[str, float] = {}
        self.orders: OrderedDict[str, Order] = OrderedDict()
        self.fills: OrderedDict[str, tuple[Fill, ...]] = OrderedDict()
        # order_id -> clock time the order was reported, until its ack or fill arrives.
        self.pending_acks: OrderedDict[str, float] = OrderedDict()
        self.ack_latencies: deque[float] = deque(maxlen=1000)
        # The same acks with their order's venue, for findings scoped to a venue.
        self.recent_acks: deque[tuple[str | None, float]] = deque(maxlen=1000)
        self.acks_total = 0
        self.predictions: deque[Prediction] = deque(maxlen=MAX_PREDICTIONS)
        self.prediction_window_s = prediction_window_s
        self.model: Model | None = None
        self.pnl: Pnl | None = None
        self.features: Features | None = None
        self.last_bar: dict[tuple[str, str], float] = {}
        self.events = 0
        self.last_event_at: float | None = None
        self.last_order_at: float | None = None  # clock time
        self.orders_seen = 0
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` synchronously with every accepted batch (it must not raise)."""
        self._listeners.append(listener)

    def ingest(self, events: Sequence[TelemetryEvent]) -> None:
        """Apply one validated batch."""
        now = self.clock()
        for ev in events:
            match ev:
                case Bar():
                    key = (ev.symbol, ev.vendor)
                    if ev.ts > self.last_bar.get(key, float("-inf")):
                        self.last_bar[key] = ev.ts
                case Order():
                    self.orders[ev.order_id] = ev
                    if len(self.orders) > MAX_ORDERS:
                        self.orders.popitem(last=False)
                    self.pending_acks[ev.order_id] = now
                    if len(self.pending_acks) > MAX_PENDING_ACKS:
                        self.pending_acks.popitem(last=False)
                    self.last_order_at = now
                    self.orders_seen += 1
                case Ack():
                    self._acked(ev.order_id, ev.ts)
                case Fill():
                    fills = self.fills.get(ev.order_id)
                    if fills is None:
                        self.fills[ev.order_id] = (ev,)
                        if len(self.fills) > MAX_ORDERS:
                            self.fills.popitem(last=False)
                    else:
                        self.fills[ev.order_id] = (*fills, ev)
                    self._acked(ev.order_id, ev.ts)
                case Position():
                    self.positions[ev.symbol] = ev.qty
                case Prediction():
                    self.predictions.append(ev)
                    horizon = ev.ts - self.prediction_window_s
                    while self.predictions and self.predictions[0].ts < horizon:
                        self.predictions.popleft()
                case Pnl():
                    self.pnl = ev
                case Features():
                    self.features = ev
                case Model():
                    self.model = ev
        self.events += len(events)
        self.last_event_at = now
        for listener in self._listeners:
            listener(events)

    def _acked(self, order_id: str, ts: float) -> None:
        if self.pending_acks.pop(order_id, None) is not None:
            order = self.orders.get(order_id)
            if order is not None:
                latency = max(0.0, ts - order.ts)
                self.ack_latencies.append(latency)
                self.recent_acks.append((order.venue, latency))
                self.acks_total += 1
