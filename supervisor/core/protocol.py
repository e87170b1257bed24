"""The control-socket protocol: newline-delimited JSON requests as a tagged union.

One request per line, ``{"cmd": NAME, ...arguments}``; one response line per request,
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {"code", "message"}}``.
See docs/protocol.md. One Decoder, built once, decodes every request (and, for
``telemetry``, every event in the batch) in a single pass.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
import numpy as np

Qty = Annotated[float, msgspec.Meta(gt=0)]
Side = Literal["buy", "sell"]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


# --- telemetry from the trading engine (docs/architecture.md "telemetry") -------------------------


class Telemetry(msgspec.Struct, frozen=True, tag_field="kind", forbid_unknown_fields=True,
                gc=False):
    """Base of one telemetry event; timestamps are epoch seconds.

    ``gc=False``: events hold only scalars (and, for ``features``, a dict of floats), so
    they can never be part of a reference cycle; keeping hundreds of thousands of them
    out of the cyclic collector keeps its pauses short, and the kill path with them.
    """


class Bar(Telemetry, frozen=True, tag="bar"):
    symbol: NonEmpty
    ts: float
    vendor: NonEmpty


class Order(Telemetry, frozen=True, tag="order"):
    order_id: NonEmpty
    symbol: NonEmpty
    side: Side
    qty: Qty
    ts: float
    venue: str | None = None
    client_order_id: str | None = None


class Ack(Telemetry, frozen=True, tag="ack"):
    order_id: NonEmpty
    ts: float


class Fill(Telemetry, frozen=True, tag="fill"):
    order_id: NonEmpty
    symbol: NonEmpty
    side: Side
    qty: Qty
    price: Annotated[float, msgspec.Meta(gt=0)]
    ts: float
    venue: str | None = None
    # The price the backtest cost model assumed for this fill (playbook 04 "Slippage vs.
    # expected"); None: not priced, not counted in slippage. An extension of the base protocol.
    expected_price: Annotated[float, msgspec.Meta(gt=0)] | None = None


class Position(Telemetry, frozen=True, tag="position"):
    symbol: NonEmpty
    qty: float
    ts: float | None = None


class Pnl(Telemetry, frozen=True, tag="pnl"):
    ts: float
    value: float


class Prediction(Telemetry, frozen=True, tag="prediction"):
    symbol: NonEmpty
    value: float
    ts: float


class Features(Telemetry, frozen=True, tag="features"):
    ts: float
    values: dict[str, float]


class Model(Telemetry, frozen=True, tag="model"):
    """The engine's live model identity (an extension: snapshots record it)."""

    model_hash: NonEmpty
    ts: float
    feature_hash: str | None = None
    lib_hash: str | None = None


class SymbolHalt(Telemetry, frozen=True, tag="symbol_halt"):
    """A trading halt or corporate action on a symbol, so its missing bars are explained
    (playbook 03 missing-data Q1). ``resumed`` true lifts it. An extension of the base protocol."""

    symbol: NonEmpty
    ts: float
    reason: Text
    resumed: bool = False


class Inference(Telemetry, frozen=True, tag="inference"):
    """One inference call's latency, request in to prediction out (playbook 04 "Inference
    latency"). An extension of the base protocol."""

    ts: float
    latency_s: Annotated[float, msgspec.Meta(ge=0)]


class QueueDepth(Telemetry, frozen=True, tag="queue"):
    """Unprocessed jobs (backfills, retrains, shadow runs) in the job queue (playbook 04 "Job
    queue depth"). An extension of the base protocol."""

    ts: float
    depth: Annotated[int, msgspec.Meta(ge=0)]


TelemetryEvent = (
    Bar | Order | Ack | Fill | Position | Pnl | Prediction | Features | Model | SymbolHalt
    | Inference | QueueDepth
)


# --- requests --------------------------------------------------------------------------


class Request(msgspec.Struct, frozen=True, tag_field="cmd", forbid_unknown_fields=True):
    """Base of every control request."""


class Status(Request, frozen=True, tag="status"):
    pass


class Watch(Request, frozen=True, tag="watch"):
    pass


class Incidents(Request, frozen=True, tag="incidents"):
    all: bool = False


class Kill(Request, frozen=True, tag="kill"):
    reason: Text


class AckIncident(Request, frozen=True, tag="ack"):
    id: NonEmpty
    commander: str | None = None


class Resolve(Request, frozen=True, tag="resolve"):
    id: NonEmpty
    root_cause: Text


class Resume(Request, frozen=True, tag="resume"):
    # playbook 03 post-incident Q1's non-prod half, which the supervisor cannot see: null,
    # the resume asserts it; true, stated; false, denied (refused at Q1).
    verified_nonprod: bool | None = None


class Reconcile(Request, frozen=True, tag="reconcile"):
    pass


class TelemetryBatch(Request, frozen=True, tag="telemetry"):
    events: list[TelemetryEvent]


class Freshness(Request, frozen=True, tag="freshness"):
    """Gate D1, the pre-open check: every traded symbol's bar age, and what is suppressed."""


class Alerts(Request, frozen=True, tag="alerts"):
    """Recent alerts with channel, count and delivery state per sink."""


class AlertNoise(Request, frozen=True, tag="alert_noise"):
    """Gate W2, the weekly alert-noise audit: alerts firing > 5 times without an action."""


class HaltSymbol(Request, frozen=True, tag="symbol_halt"):
    """An operator reports a trading halt or corporate action (playbook 03 missing-data Q1)."""

    symbol: NonEmpty
    reason: Annotated[str, msgspec.Meta(max_length=4096)] = ""
    resumed: bool = False


MonitorName = Literal["drift", "pnl", "config_drift", "ks", "churn"]


class CheckMonitor(Request, frozen=True, tag="check"):
    """Run one monitor's check now (the daily PSI, the daily PnL band, the config hash)
    and return its status; it only evaluates, so it is read-only for access control."""

    monitor: MonitorName


TreeName = Literal["no-fills", "wrong-pnl", "missing-data", "alerts-spam", "config-mismatch",
                   "post-incident"]


class WalkTree(Request, frozen=True, tag="tree"):
    """Walk one of playbook 03's recovery trees: probes answer from live state, ``answers``
    (question id -> yes/no) the rest; read-only (see supervisor/playbook)."""

    id: TreeName
    answers: dict[str, bool] = {}


class ShowRunbook(Request, frozen=True, tag="runbook"):
    """One of playbook 01's runbook procedures, or (``id`` null) the list of all ten."""

    id: str | None = None


class Throttle(Request, frozen=True, tag="throttle"):
    """An operator throttles the desk (a recovery tree's throttle leaf, playbook 03): a P1
    incident of class ``operator-throttle`` at ``multiplier`` (0 < m <= 1); mutating."""

    multiplier: float
    reason: Text


class Report(Request, frozen=True, tag="report"):
    """A report's data series (docs/alerts.md "Plots"): ``pnl-band``, cumulative live PnL over
    the backtest band; ``drift``, one ``feature``'s live and training distributions.
    deskctl draws them; read-only."""

    kind: Literal["pnl-band", "drift"]
    feature: str | None = None


GateId = Literal["P1", "P2", "P3", "P4", "D1", "D2", "D3", "D4", "D5", "W1", "W2", "W3", "W4",
                 "M1", "M2", "M3", "M4", "Q1", "Q2", "Q3"]


class Gates(Request, frozen=True, tag="gates"):
    """Playbook 05's twenty gates: PASS / FAIL / DUE / EXPIRED with evidence; read-only."""


class AttestGate(Request, frozen=True, tag="gate_attest"):
    """An operator attests a gate (``note``: what was done, where the record is)."""

    gate: GateId
    note: Text


class Arm(Request, frozen=True, tag="arm"):
    """Leave DISARMED: refused while a pre-launch gate is not PASS (or D1/D2 fail in the
    session)."""


class Disarm(Request, frozen=True, tag="disarm"):
    """Stop trading until armed again (DISARMED, size 0); ``reason`` is journaled."""

    reason: Text


RunId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
VenueName = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Secret = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


class RunbookStart(Request, frozen=True, tag="runbook_start"):
    """Open a checklist run of runbook ``id`` (for ``incident``, optionally)."""

    id: NonEmpty
    incident: str | None = None


class RunbookDone(Request, frozen=True, tag="runbook_done"):
    """Mark step ``step`` (1-based) of run ``run`` done, with an optional note."""

    run: RunId
    step: int
    note: Annotated[str, msgspec.Meta(max_length=4096)] = ""


class RunbookVerify(Request, frozen=True, tag="runbook_verify"):
    """Run the run's verify check (``commit``: config-rollback's revert commit), or, for
    a runbook verified by hand, record the operator's ``attest`` note."""

    run: RunId
    commit: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None
    attest: Annotated[str, msgspec.Meta(max_length=4096)] | None = None


class RunbookClose(Request, frozen=True, tag="runbook_close"):
    """Complete a run (every step done, verify passed), or abandon it with a reason."""

    run: RunId
    abandon: Annotated[str, msgspec.Meta(max_length=4096)] | None = None


class RunbookRuns(Request, frozen=True, tag="runbook_runs"):
    """Checklist runs: the open ones (``all``: closed ones too), or one (``run``)."""

    all: bool = False
    run: RunId | None = None


class Credentials(Request, frozen=True, tag="credentials"):
    """Each venue's credential lifecycle and the last finished rotation (read-only)."""


class CredentialsStage(Request, frozen=True, tag="credentials_stage"):
    """Put a new venue key in the credential store, to activate at ``activate_at`` (epoch
    seconds; null: now)."""

    venue: VenueName
    key_id: Secret
    secret_key: Secret
    activate_at: float | None = None


class CredentialsCheck(Request, frozen=True, tag="credentials_check"):
    """Try the staged key with GET /v2/account (non-mutating)."""

    venue: VenueName


class CredentialsActivate(Request, frozen=True, tag="credentials_activate"):
    """Switch the live adapter to the staged, checked key."""

    venue: VenueName


class CredentialsRevoke(Request, frozen=True, tag="credentials_revoke"):
    """Confirm the venue refuses the previous key, then drop it from the store."""

    venue: VenueName


class Route(Request, frozen=True, tag="route"):
    """Flip where the engine sends new orders (playbook 01 broker-failover step 01);
    ``venue`` null: every venue again. Journaled with ``reason``."""

    venue: str | None
    reason: Text


class Drill(Request, frozen=True, tag="drill"):
    """Run a drill against the paper venues of ``[drill]`` (gate P1: ``killswitch``;
    gate M1: ``failover``) and answer with its report once it is over; mutating."""

    kind: Literal["killswitch", "failover"]


Symbol = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]


class Flatten(Request, frozen=True, tag="flatten"):
    """Flatten positions from broker truth while HALTED (docs/operations.md "Flatten"):
    ``symbols`` (empty: all) at ``venue`` (null: every venue); ``force`` skips the clean
    reconciliation it otherwise needs (resume operators only). Answers once it is over."""

    reason: Text
    symbols: list[Symbol] = []
    venue: VenueName | None = None
    force: bool = False


class CalendarShow(Request, frozen=True, tag="calendar"):
    """The trading calendar: today's and the next ``days`` sessions and where each answer
    came from; ``refresh`` asks the venues again first."""

    refresh: bool = False
    days: Annotated[int, msgspec.Meta(ge=1, le=60)] = 5


AnyRequest = (
    Status | Watch | Incidents | Kill | AckIncident | Resolve | Resume | Reconcile
    | TelemetryBatch | Freshness | HaltSymbol | Alerts | AlertNoise | CheckMonitor
    | WalkTree | ShowRunbook | Report | Gates | AttestGate | Arm | Disarm | Throttle
    | RunbookStart | RunbookDone | RunbookVerify | RunbookClose | RunbookRuns
    | Credentials | CredentialsStage | CredentialsCheck | CredentialsActivate
    | CredentialsRevoke | Drill | Route | Flatten | CalendarShow
)
COMMANDS = ("status", "watch", "incidents", "kill", "ack", "resolve", "resume", "reconcile",
            "telemetry", "freshness", "symbol_halt", "alerts", "alert_noise", "check",
            "tree", "runbook", "report", "gates", "gate_attest", "arm", "disarm", "throttle",
            "runbook_start", "runbook_done", "runbook_verify", "runbook_close",
            "runbook_runs", "credentials", "credentials_stage", "credentials_check",
            "credentials_activate", "credentials_revoke", "drill", "route", "flatten", "calendar")

request_decoder: msgspec.json.Decoder[AnyRequest] = msgspec.json.Decoder(AnyRequest)
encoder = msgspec.json.Encoder()


class ProtocolError(Exception):
    """A request line that cannot be served; ``code`` is the wire error code."""

    def __init__(self, code: str, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail


_PATH = re.compile(r"at `\$\.events\[(\d+)\](?:\.(\w+))?")

# The deepest nesting of arrays and objects a request may have. The deepest valid one is
# 4 (a telemetry batch's ``features`` values: {events: [{values: {}}]}); 16 leaves room
# for extensions. Deeper lines are refused before any decoder, all of which recurse,
# sees them: msgspec skips the fields before a union's tag field recursively.
MAX_NESTING = 16

# Only brackets and quotes decide the nesting: everything else is dropped first.
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'[]{}"')
_BRACKET = np.zeros(256, dtype=np.int8)
_BRACKET[[ord("["), ord("{")]] = 1
_BRACKET[[ord("]"), ord("}")]] = -1


def nests_deeper_than(line: bytes, limit: int = MAX_NESTING) -> bool:
    """Whether arrays and objects nest deeper than ``limit`` in ``line``, outside JSON
    strings, found without decoding it: linear, C-speed bytes operations, no recursion.

    The line is reduced to its quotes and brackets (escapes first: an escaped backslash,
    then an escaped quote, as a JSON reader consumes them). Adjacent quotes are dropped:
    an empty string, or two strings with nothing structural between them, hides no
    bracket. A line whose strings hide none is then peeled one level a pass; otherwise
    (or with mismatched brackets: invalid JSON) the exact scan decides.
    """
    if b"\\" in line:
        line = line.replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = line.translate(None, _NOT_STRUCTURE)
    if structure.count(b"[") + structure.count(b"{") <= limit:
        return False  # the common small request: too few brackets to nest that deep
    structure = structure.replace(b'""', b"")
    if b'"' not in structure:
        rest = structure
        for _ in range(limit):
            # One level a pass: a pair left by this pass's replacement is not removed
            # until the next (the "." marks stand between its brackets meanwhile).
            peeled = rest.replace(b"{}", b".").replace(b"[]", b".").replace(b".", b"")
            if not peeled:
                return False
            if len(peeled) == len(rest):
                break  # mismatched brackets: invalid JSON, let the exact scan say
            rest = peeled
        else:
            if b"{}" in rest or b"[]" in rest:
                return True  # a pair still nests inside `limit` peeled levels
    return nesting_depth(structure) > limit


def nesting_depth(structure: bytes) -> int:
    """The deepest nesting of ``[``/``{`` outside the strings of ``structure`` (JSON, or
    its quotes and brackets alone, unescaped as ``nests_deeper_than`` does)."""
    codes = np.frombuffer(structure.translate(None, _NOT_STRUCTURE), dtype=np.uint8)
    if not codes.size:
        return 0
    in_string = (np.cumsum(codes == ord('"'), dtype=np.int64) & 1).astype(bool)
    steps = _BRACKET[codes]
    steps[in_string] = 0
    return int(np.cumsum(steps, dtype=np.int64).max())


def decode_request(line: bytes) -> AnyRequest:
    """Decode one request line.

    Raises:
        ProtocolError: ``invalid_json``, ``unknown_command`` or ``bad_request`` (for a
            telemetry batch, with the ``index`` and ``field`` of the first bad event;
            for a line nested deeper than ``MAX_NESTING``, before any decoding).
    """
    if nests_deeper_than(line):
        raise ProtocolError("bad_request", f"request nests arrays/objects deeper than "
                            f"{MAX_NESTING} levels; nothing was applied")
    try:
        return request_decoder.decode(line)
    except msgspec.ValidationError as exc:
        raise _explain(line, exc) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError("invalid_json", f"request is not valid JSON: {exc}") from None
    except RecursionError:  # belt and braces: the depth check should make this unreachable
        raise ProtocolError("bad_request", "request nests too deeply; nothing was applied"
                            ) from None


def _explain(line: bytes, exc: msgspec.ValidationError) -> ProtocolError:
    # The slow path, only for rejected requests: find out which kind of wrong it is.
    try:
        raw = msgspec.json.decode(line)
    except (msgspec.DecodeError, RecursionError):
        raw = None
    if not isinstance(raw, dict):
        return ProtocolError("bad_request", "request must be a JSON object with a \"cmd\" field")
    cmd = raw.get("cmd")
    if cmd is None:
        return ProtocolError("bad_request", "request has no \"cmd\" field")
    if cmd not in COMMANDS:
        return ProtocolError(
            "unknown_command",
            f"unknown command {cmd!r}; known commands: {', '.join(COMMANDS)}",
        )
    message = str(exc)
    m = _PATH.search(message)
    if cmd == "telemetry" and m:
        index = int(m.group(1))
        field = m.group(2) or "kind"
        named = re.search(r"(?:unknown|missing required) field `([^`]+)`", message)
        if named and m.group(2) is None:
            field = named.group(1)
        return ProtocolError(
            "bad_request",
            f"telemetry event {index}: field {field!r}: {message}; nothing was applied",
            index=index, field=field,
        )
    return ProtocolError("bad_request", f"bad arguments for {cmd!r}: {message}")


def ok(result: object) -> bytes:
    return encoder.encode({"ok": True, "result": result}) + b"\n"


def error(code: str, message: str, **detail: Any) -> bytes:
    body = {"ok": False, "error": {"code": code, "message": message, **detail}}
    return encoder.encode(body) + b"\n"
