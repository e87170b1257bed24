"""Configuration: one TOML file decoded by msgspec into frozen Structs
(docs/architecture.md principle 7).

Every threshold defaults to the playbook's number, and the comment beside it cites where the
playbook defines it. Unknown keys are errors; an error names the key and what was expected.
Credentials never come from the command line: inline in the file (for a paper account),
or by name from ``$CREDENTIALS_DIRECTORY`` (systemd's ``LoadCredential=``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import msgspec

from actors.configdrift import ConfigDriftConfig
from actors.freshness import FreshnessConfig
from actors.heartbeat import HeartbeatConfig
from actors.model import ModelMonitorConfig
from actors.pnl import PnlMonitorConfig
from actors.reconciliation import ReconciliationConfig
from actors.risk import RiskConfig
from hardware.config import ButtonConfig
from supervisor.core.errors import ConfigError
from supervisor.core.tomlconf import check_unique, decode_toml
from supervisor.ops.alert_sinks import AlertsConfig
from supervisor.ops.deploys import DeploysConfig
from supervisor.playbook.gates import GatesConfig


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class VenueConfig(_Section, frozen=True, kw_only=True):
    """One broker venue speaking the Alpaca Trading API v2 subset (docs/architecture.md)."""

    name: str
    base_url: str
    key_id: str | None = None
    secret_key: str | None = None
    # Names of files in $CREDENTIALS_DIRECTORY holding the key id and secret.
    key_id_credential: str | None = None
    secret_key_credential: str | None = None
    timeout_s: float = 2.0
    # playbook 01 killswitch step 02: "Cancel all open orders across all venues" is the
    # default; "prefix" cancels only orders whose client_order_id carries the engine's
    # prefix, for accounts shared with manual traders (Hummingbot #2896).
    cancel_scope: Literal["account", "prefix"] = "account"
    client_order_prefix: str = ""
    # The venue's own dead man's switch (docs/operations.md "Dead man's switch"): re-armed
    # while the supervisor is healthy, it cancels every open order at the venue this long
    # after the supervisor stops re-arming it (frozen, wedged, halted). 0: off (the
    # default: Alpaca has no such API).
    dead_man_s: float = 0.0

    def __post_init__(self) -> None:
        problem = venue_name_problem(self.name)
        if problem is not None:
            raise ValueError(problem)
        if self.cancel_scope == "prefix" and not self.client_order_prefix:
            raise ValueError("cancel_scope 'prefix' needs a non-empty client_order_prefix")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        if not (self.dead_man_s == 0 or self.dead_man_s >= 1.0) or self.dead_man_s > 86_400:
            raise ValueError("dead_man_s must be 0 (off) or from 1 to 86400 seconds")


# A venue's name names its directory in the credential store (supervisor/ops/credentials.py).
_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
NAME_RULE = "letters, digits, '.', '_' and '-', not starting with '.'"


def venue_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a venue's directory in the credential store, or None."""
    if not name or not set(name) <= _NAME_OK or name.startswith("."):
        return (f"venue name {name!r} may use only {NAME_RULE} (it names the venue's "
                "directory in the credential store)")
    return None


class CredentialsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Credential rotation, mounted as ``[credentials]``."""

    # The credential store directory; empty: STATE_DIR/credentials.
    store: str = ""
    # playbook 01 api-credentials step 04: "Activate; wait 5 minutes; revoke the old credential".
    revoke_after_s: float = 300.0

    def __post_init__(self) -> None:
        if self.revoke_after_s < 0:
            raise ValueError("revoke_after_s must be >= 0")


class ControlConfig(_Section, frozen=True, kw_only=True):
    """The local control socket (docs/architecture.md "Control socket")."""

    socket: str = "/run/desk-supervisor/control.sock"
    socket_mode: int = 0o660
    max_request_bytes: int = 4 * 1024 * 1024
    # Who may `resume` (user names, uids as strings, or "@group"); empty: the same as
    # `operators`.
    resume_operators: list[str] = []
    # Per-watcher queue of state changes; a watcher that falls this far behind is
    # dropped rather than allowed to slow the kill path (STYLE rule 4).
    watch_queue: int = 256
    # Every watcher gets the status at least this often: the engine's gate closes when
    # it hears nothing for its grace (a dead man's switch), so silence means trouble.
    watch_heartbeat_s: float = 1.0
    # Who may run mutating commands (kill, ack, resolve, resume, reconcile,
    # symbol_halt): user names, uids as strings, or "@group"; empty: everyone who can
    # open the socket (its mode and group already limit that). Root and the daemon's
    # user always may.
    operators: list[str] = []
    # `kill` open to everyone who can connect: a kill-switch nobody can press is worse
    # than one anyone can.
    kill_open: bool = True
    # Group the socket file is given (with socket_mode 0660: who may connect); empty:
    # the daemon's primary group.
    socket_group: str = ""
    # A client can neither hog the daemon nor sit on a connection forever.
    max_connections: int = 64
    idle_timeout_s: float = 600.0
    # A request line begun must end (its newline) within this: a client stalled
    # mid-line, or trickling a byte now and then, is dropped instead of holding a slot.
    line_timeout_s: float = 10.0
    # A response (or a watch message) must be taken by the client within this: one
    # that stops reading is dropped instead of holding a slot.
    send_timeout_s: float = 10.0
    # Over max_connections, a new connection's first line is read for this long: a
    # `kill` is served (the kill-switch is always reachable), anything else, or
    # nothing, gets too_many_connections.
    triage_timeout_s: float = 0.5

    def __post_init__(self) -> None:
        if self.max_request_bytes < 1024:
            raise ValueError("max_request_bytes must be >= 1024")
        if not 0 <= self.socket_mode <= 0o777:
            raise ValueError(
                f"socket_mode must be a permission mode written in octal, like 0o660 "
                f"(got {self.socket_mode}, which is {oct(self.socket_mode)})")
        if self.watch_queue < 1:
            raise ValueError("watch_queue must be >= 1")
        if self.watch_heartbeat_s <= 0:
            raise ValueError("watch_heartbeat_s must be > 0")
        if self.max_connections < 2:
            raise ValueError("max_connections must be >= 2")
        for name in ("idle_timeout_s", "line_timeout_s", "send_timeout_s",
                     "triage_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")


class KillConfig(_Section, frozen=True, kw_only=True):
    """The kill-switch executor (playbook 01 procedure killswitch)."""

    # playbook 01 killswitch verify: "zero new orders for >= 60 seconds after the switch"
    quiet_s: float = 60.0
    # Venue polling while verifying (NautilusTrader #2572 polls in-flight orders every
    # 100 ms before declaring a cancel-all done) and, slower, while latched afterwards.
    verify_poll_s: float = 0.1
    watch_poll_s: float = 1.0
    # The share of each venue's stated request budget (X-RateLimit-Limit, Alpaca: 200 a
    # minute, shared with the engine) verification may spend: it polls no faster than
    # that allows, so it does not starve the desk's own cancels and pings.
    verify_budget_share: float = 0.5
    # playbook 01 killswitch step 03: "the last 10 minutes of predictions"
    prediction_window_s: float = 600.0
    recancel_backoff_s: float = 0.5
    # A venue still holding open orders, or unreachable, this long after the switch is
    # put on the incident and paged (never silently pending).
    stuck_after_s: float = 5.0
    # An order that cancel-all failed to cancel this many times gets its own cancel
    # (DELETE /v2/orders/{id}), retried with a backoff doubling from
    # order_retry_initial_s to order_retry_max_s until the venue says it is gone.
    escalate_after_failures: int = 2
    order_retry_initial_s: float = 0.5
    order_retry_max_s: float = 5.0

    def __post_init__(self) -> None:
        if not 0.0 < self.verify_budget_share <= 1.0:
            raise ValueError("verify_budget_share must be in (0, 1]")
        if self.escalate_after_failures < 1:
            raise ValueError("escalate_after_failures must be >= 1")
        if self.order_retry_max_s < self.order_retry_initial_s:
            raise ValueError("order_retry_max_s must be >= order_retry_initial_s")
        for key in ("quiet_s", "verify_poll_s", "watch_poll_s", "prediction_window_s",
                    "recancel_backoff_s", "stuck_after_s", "order_retry_initial_s"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be > 0")


class StorageConfig(_Section, frozen=True, kw_only=True):
    """Artifacts on disk (kill snapshots, reconciliation reports, postmortems)."""

    # An artifact storage refused is kept in memory and tried again this often.
    retry_s: float = 5.0

    def __post_init__(self) -> None:
        if self.retry_s <= 0:
            raise ValueError("retry_s must be > 0")


class FlattenConfig(_Section, frozen=True, kw_only=True):
    """Flattening positions at the venues (playbook 05 gate P1; docs/operations.md
    "Flatten"): one reduce-only marketable-limit order per position and venue, from the
    venues' own positions, re-read until flat or the deadline."""

    # gate P1: the switch "flattens all positions in < 60 s"
    deadline_s: float = 60.0
    # Positions are re-read (and open flatten orders looked up) this often.
    poll_s: float = 0.5
    # The limit goes this far through the venue's current price (a sell at 1% under it,
    # a buy 1% over): marketable, but never a bare market order into a thin book.
    limit_band: float = 0.01
    # A flatten order still open after this long is cancelled and, once the venue says it
    # is closed, the remainder is sent again at a fresh price.
    reprice_s: float = 5.0
    # playbook 03 missing-data "Both vendors down. ... flatten by EOD if data does not
    # recover": with a trading calendar, this long before the session's close, a live
    # stale-data P0 flattens every position (0: never by itself).
    eod_before_close_s: float = 600.0

    def __post_init__(self) -> None:
        if not self.eod_before_close_s >= 0:
            raise ValueError("eod_before_close_s must be >= 0")
        for key in ("deadline_s", "poll_s", "reprice_s"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be > 0")
        if not 0 < self.limit_band < 0.5:
            raise ValueError("limit_band must be in (0, 0.5)")


class CalendarConfig(_Section, frozen=True, kw_only=True):
    """The desk's trading calendar (docs/operations.md "Trading calendar"): when the
    exchange is in session, for the feeds' deadlines, the checks at the open and the
    close, and "one full session" of recovery."""

    # "always": a 24/7 venue (crypto), always in session; "custom": ``session`` on
    # ``days`` with the closed dates and early closes below; or an exchange the holidays
    # library knows (e.g. "NYSE", "LSE", "JPX"), its holidays closed too.
    calendar: str = "always"
    session: str = "09:30-16:00"  # the regular session, exchange local time
    timezone: str = "America/New_York"  # the exchange's IANA time zone
    days: list[int] = msgspec.field(default_factory=lambda: [0, 1, 2, 3, 4])  # Monday 0
    closed_dates: list[str] = []  # "YYYY-MM-DD": closed all day (beyond the library)
    early_closes: dict[str, str] = {}  # "YYYY-MM-DD" -> "HH:MM": that day's close
    # Ask the venues' own calendar first (Alpaca GET /v2/calendar), re-read this often.
    venue: bool = True
    refresh_s: float = 6 * 3600.0

    def __post_init__(self) -> None:
        import datetime as dt
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        from supervisor.core.calendar import Calendar, parse_hhmm

        if self.calendar not in ("always", "custom"):
            import holidays

            if self.calendar not in holidays.list_supported_financial():
                known = ", ".join(sorted(holidays.list_supported_financial()))
                raise ValueError(f"calendar must be 'always', 'custom' or an exchange the "
                                 f"holidays library knows ({known}); got {self.calendar!r}")
        if self.timezone != "UTC":
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError, OSError):
                raise ValueError(f"timezone: unknown time zone {self.timezone!r}, give an "
                                 "IANA name such as 'America/New_York'") from None
        if any(not 0 <= d <= 6 for d in self.days):
            raise ValueError(f"days must be weekdays 0-6 (Monday 0), got {self.days}")
        Calendar(session=self.session, zone=self.timezone, days=self.days,
                 always=self.calendar == "always")
        for day in [*self.closed_dates, *self.early_closes]:
            try:
                dt.date.fromisoformat(day)
            except ValueError:
                raise ValueError(f"dates must be 'YYYY-MM-DD', got {day!r}") from None
        for close in self.early_closes.values():
            parse_hhmm(close)
        if not self.refresh_s > 0:
            raise ValueError("refresh_s must be > 0")


class ComplianceConfig(_Section, frozen=True, kw_only=True):
    """The compliance watch (docs/operations.md "Compliance watch"): every new order the
    venues report is judged by the gate's rules as they stood when it was made; an order
    the gate would have refused is cancelled and opens a runaway-engine P0."""

    enabled: bool = True
    # How often each venue's new orders are read, at the fastest (the budget below may
    # make it slower; status says how fast it is).
    interval_s: float = 1.0
    # The share of each venue's stated request budget (X-RateLimit-Limit; Alpaca: 200 a
    # minute, shared with the engine, the heartbeat and the kill-switch) the watch may use.
    budget_share: float = 0.25
    # An order is judged by the most permissive gate view in force during this long
    # before it: the time the engine's gate takes to hear of a change.
    grace_s: float = 1.0
    # Gate views are kept this long (an order's venue time older than this is judged by
    # the oldest kept).
    history_s: float = 300.0
    # The largest new exposure one order may add at full size, per symbol; scaled by the
    # size multiplier (throttle, recovery). Unlisted symbols: no cap. The engine's gate
    # applies the same caps.
    max_order_qty: dict[str, float] = {}

    def __post_init__(self) -> None:
        for key in ("interval_s", "grace_s", "history_s"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be > 0")
        if not 0.0 < self.budget_share <= 1.0:
            raise ValueError("budget_share must be in (0, 1]")
        bad = sorted(s for s, q in self.max_order_qty.items() if not q > 0)
        if bad:
            raise ValueError(f"max_order_qty must be > 0 (symbols {', '.join(bad)})")


class RecoveryConfig(_Section, frozen=True, kw_only=True):
    """Leaving HALTED (playbook 03 post-incident)."""

    size_multiplier: float = 0.25  # playbook 03 post-incident: "Resume at 25% size"
    session_s: float = 6.5 * 3600  # playbook 03: "for one full session" (a 6.5 h equity day)

    def __post_init__(self) -> None:
        if not 0 < self.size_multiplier <= 1:
            raise ValueError("size_multiplier must be in (0, 1]")
        if self.session_s <= 0:
            raise ValueError("session_s must be > 0")


class ThrottleConfig(_Section, frozen=True, kw_only=True):
    """P1 size multipliers per incident class (playbook 02 immediate actions)."""

    feature_drift: float = 0.25  # playbook 02 feature-drift: "Throttle live size to 25%"
    pnl_divergence: float = 0.5  # playbook 02 pnl-divergence: "Halve live size"
    config_drift: float = 0.25  # playbook 02: "P1 means degrade - typically throttle to 25%"
    alerts_spam: float = 0.5  # playbook 03 alerts-spam Q1 NO: "Halve live size"
    default: float = 0.25  # playbook 02: "typically throttle to 25% size"

    def __post_init__(self) -> None:
        for key in ("feature_drift", "pnl_divergence", "config_drift", "alerts_spam", "default"):
            if not 0 < getattr(self, key) <= 1:
                raise ValueError(f"{key} must be in (0, 1]: a throttle never raises size")

    def for_class(self, incident_class: str) -> float:
        return float(getattr(self, incident_class.replace("-", "_"), self.default))


class SupervisionConfig(_Section, frozen=True, kw_only=True):
    """Actor restarts (docs/architecture.md principle 8; OTP's 1 restart in 5 s)."""

    max_restarts: int = 1
    period_s: float = 5.0
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError("max_restarts must be >= 0")
        for key in ("period_s", "backoff_initial_s", "backoff_max_s"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be > 0")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be >= backoff_initial_s")

class EngineConfig(_Section, frozen=True, kw_only=True):
    """What the supervisor knows of the trading engine before telemetry tells it."""

    model_hash: str | None = None


class MetricsConfig(_Section, frozen=True, kw_only=True):
    """Prometheus metrics (docs/operations.md "Metrics"); off unless listen or textfile."""

    # "HOST:PORT" to serve GET /metrics on, e.g. "127.0.0.1:9464"; empty: no endpoint.
    # Loopback only unless allow_remote: the desk's state is nobody else's business.
    listen: str = ""
    allow_remote: bool = False
    # A *.prom file for node_exporter's textfile collector, replaced atomically every
    # interval_s; empty: none written.
    textfile: str = ""
    interval_s: float = 15.0  # Prometheus's default scrape_interval

    def __post_init__(self) -> None:
        import ipaddress

        if self.listen:
            host, _ = self.address()
            if not self.allow_remote:
                try:
                    loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
                except ValueError:
                    loopback = False
                if not loopback:
                    raise ValueError(
                        f"listen {self.listen!r} is not a loopback address: use "
                        "127.0.0.1 or [::1], or set allow_remote = true")
        if self.textfile and not self.textfile.endswith(".prom"):
            raise ValueError(f"textfile must end in .prom (node_exporter's textfile "
                             f"collector reads no other file), got {self.textfile!r}")
        if self.interval_s <= 0:
            raise ValueError("interval_s must be > 0")

    def address(self) -> tuple[str, int]:
        """``listen`` as (host, port), brackets of an IPv6 host removed.

        Raises:
            ValueError: ``listen`` is not ``HOST:PORT``.
        """
        host, sep, port = self.listen.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not (sep and host and port.isascii() and port.isdigit() and int(port) < 65536):
            raise ValueError(f"listen must be 'HOST:PORT', like '127.0.0.1:9464', "
                             f"got {self.listen!r}")
        return host, int(port)


# Alpaca's live trading endpoint: never a drill venue whatever the config says (its
# paper endpoint is paper-api.alpaca.markets).
LIVE_ONLY_HOSTS = frozenset({"api.alpaca.markets"})


class DrillConfig(_Section, frozen=True, kw_only=True):
    """Drills against PAPER venues: the kill-switch (gate P1) and the broker failover
    (gate M1, playbook 01 broker-failover). See docs/playbook.md "Drills"."""

    # The paper venues (a real paper account or a simulator), never a live one: the
    # config is refused when one shares a host:port, a credential name or a key id with a
    # `[[venues]]` entry (``live_venue_clash``).
    venues: list[VenueConfig] = []
    # playbook 01 broker-failover step 01 "Flip the broker_route flag to the secondary
    # venue": names of two of the paper venues; empty: the first and the second.
    primary: str = ""
    secondary: str = ""
    # playbook 01 broker-failover step 03 "a single-share test order on a liquid symbol".
    symbol: str = "SPY"
    test_qty: float = 1.0
    # The test orders are limit buys this far below any real price, so they rest (and
    # never fill) until cancelled.
    test_limit_price: float = 1.0
    # Resting test orders per paper venue before the switch is pulled (killswitch drill).
    resting_orders: int = 2
    # A position of this many shares is opened on each paper venue first (a market
    # buy), for the drill to flatten (playbook 05 P1: "flatten all positions"); 0: none.
    position_qty: float = 1.0
    # playbook 05 P1: "flatten all positions and block new orders within 60 seconds".
    flat_target_s: float = 60.0
    # playbook 01 killswitch verify: "zero new orders for >= 60 seconds after the switch".
    quiet_s: float = 60.0
    # How often the drill polls the paper venues. Alpaca allows 200 requests a minute
    # per account: a 1 s poll (open orders, orders since, positions) stays under it.
    poll_s: float = 1.0
    # playbook 01 broker-failover trigger: "Primary broker heartbeat fails for 3
    # consecutive checks"; playbook 04 broker heartbeat: "every 10s".
    detect_failures: int = 3
    ping_interval_s: float = 10.0
    # playbook 01 broker-failover step 02 "check rate-limit headroom": at least this share
    # of the secondary's per-minute budget left.
    min_headroom: float = 0.5
    # playbook 05 M1 "Time-to-recovery target documented": the playbook names no number; ours
    # is 2 minutes from the outage to a reconciled secondary.
    recovery_target_s: float = 120.0
    # The longest a whole drill may run before it is stopped and recorded as failed.
    max_duration_s: float = 600.0

    def __post_init__(self) -> None:
        names = [v.name for v in self.venues]
        check_unique("drill venue names", names)
        for key in ("primary", "secondary"):
            name = getattr(self, key)
            if name and name not in names:
                raise ValueError(f"{key} {name!r} is not one of the drill venues "
                                 f"({', '.join(names) or 'none configured'})")
        if self.primary and self.primary == self.secondary:
            raise ValueError("primary and secondary must be different drill venues")
        if not self.symbol.strip():
            raise ValueError("symbol must name a liquid symbol, e.g. 'SPY'")
        for key in ("test_qty", "test_limit_price", "flat_target_s", "quiet_s", "poll_s",
                    "ping_interval_s", "recovery_target_s", "max_duration_s"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be > 0")
        if self.position_qty < 0:
            raise ValueError("position_qty must be >= 0 (0: open no position)")
        if self.resting_orders < 1:
            raise ValueError("resting_orders must be >= 1")
        if self.detect_failures < 1:
            raise ValueError("detect_failures must be >= 1")
        if not 0 <= self.min_headroom <= 1:
            raise ValueError("min_headroom must be in [0, 1]")

    def failover_pair(self) -> tuple[str, str]:
        """The (primary, secondary) paper venue names for the failover drill.

        Raises:
            ValueError: fewer than two paper venues are configured.
        """
        names = [v.name for v in self.venues]
        primary = self.primary or next((n for n in names if n != self.secondary), "")
        secondary = self.secondary or next((n for n in names if n != primary), "")
        if not primary or not secondary:
            raise ValueError("the failover drill needs two paper venues in [drill] venues "
                             "(a primary and a secondary)")
        return primary, secondary


# Names of this machine: a drill venue on "localhost" reaches a live one on 127.0.0.1.
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", "::"})


def _host_port(url: str) -> str:
    """Where a base URL connects: host and port (the scheme's default port when none is
    given). The path is not compared: another path on the same server is no other
    account."""
    from urllib.parse import urlsplit

    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:  # not a number: compared as written
        port = None
    port = port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    host = (parts.hostname or "").lower().rstrip(".")
    return f"{'loopback' if _is_loopback(host) else host}:{port}"


def _is_loopback(host: str) -> bool:
    """Every name of this host: localhost, 127.0.0.0/8 in any spelling (127.1), ::1,
    IPv4-mapped loopback, and the unspecified addresses (0.0.0.0, ::) that connect here."""
    import ipaddress
    import socket

    if host in _LOOPBACK:
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        try:  # the short IPv4 spellings (127.1) the resolver accepts
            addr = ipaddress.ip_address(socket.inet_aton(host))
        except OSError:
            return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback or addr.is_unspecified


def live_venue_clash(
    drill: DrillConfig,
    venues: list[VenueConfig],
    *,
    live_keys: dict[str, str] | None = None,
    environ: dict[str, str] | None = None,
) -> str | None:
    """Why a drill venue could reach a live account, or None (docs/architecture.md principle 4).

    A drill venue clashes with a live venue when it connects to the same host and port
    (whatever the path), reads the same systemd credential (``key_id_credential`` or
    ``secret_key_credential``), or uses the same key id: inline, or resolved from
    ``$CREDENTIALS_DIRECTORY`` (``venue_credentials``; a credential that cannot be read
    here is skipped: the drill checks again before it starts, and refuses then).

    Args:
        live_keys: more live key ids, each to what it is (e.g. "live venue alpha (the
            key its adapter uses now)"): the drill adds the running adapters' keys, which
            a rotation through the credential store may have changed.
        environ: where ``$CREDENTIALS_DIRECTORY`` is read (default ``os.environ``).
    """
    from urllib.parse import urlsplit

    if not drill.venues:
        return None

    def key_id(venue: VenueConfig) -> str | None:
        try:
            return venue_credentials(venue, environ=environ)[0]
        except ConfigError:
            return venue.key_id

    hosts = {_host_port(v.base_url): v for v in venues}
    names: dict[str, tuple[VenueConfig, str]] = {}
    keys: dict[str, str] = {}
    for v in venues:
        for attr in ("key_id_credential", "secret_key_credential"):
            name = getattr(v, attr)
            if name:
                names.setdefault(name, (v, attr))
        if v.key_id:
            keys.setdefault(v.key_id, f"live venue {v.name}")
        resolved = key_id(v)
        if resolved and v.key_id_credential:
            keys.setdefault(resolved, f"live venue {v.name} (credential "
                                      f"{v.key_id_credential!r})")
    for kid, what in (live_keys or {}).items():
        if kid:
            keys.setdefault(kid, what)
    for paper in drill.venues:
        where = _host_port(paper.base_url)
        live = hosts.get(where)
        if live is not None:
            return (f"drill venue {paper.name} connects to {where} as live venue {live.name} "
                    f"does ({paper.base_url} and {live.base_url}): drills run on paper "
                    "venues only")
        if (urlsplit(paper.base_url.strip()).hostname or "").lower() in LIVE_ONLY_HOSTS:
            return (f"drill venue {paper.name} points at a live trading endpoint "
                    f"({paper.base_url}): use the paper endpoint")
        for attr in ("key_id_credential", "secret_key_credential"):
            name = getattr(paper, attr)
            if name and name in names:
                live, live_attr = names[name]
                return (f"drill venue {paper.name} reads credential {name!r} ({attr}) that "
                        f"live venue {live.name} reads ({live_attr}): drills run on paper "
                        "accounts only")
        for kid, how in ((paper.key_id, ""),
                         (key_id(paper), f" (credential {paper.key_id_credential!r})")):
            if kid and kid in keys:
                return (f"drill venue {paper.name}{how if kid != paper.key_id else ''} uses "
                        f"the key id of {keys[kid]}: drills run on paper accounts only")
    return None


class Config(_Section, frozen=True, kw_only=True):
    """The whole configuration file."""

    state_dir: str = "/var/lib/desk-supervisor"
    venues: list[VenueConfig] = []
    control: ControlConfig = ControlConfig()
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    kill: KillConfig = KillConfig()
    reconciliation: ReconciliationConfig = ReconciliationConfig()
    storage: StorageConfig = StorageConfig()
    flatten: FlattenConfig = FlattenConfig()
    compliance: ComplianceConfig = ComplianceConfig()
    calendar: CalendarConfig = CalendarConfig()
    recovery: RecoveryConfig = RecoveryConfig()
    throttle: ThrottleConfig = ThrottleConfig()
    supervision: SupervisionConfig = SupervisionConfig()
    engine: EngineConfig = EngineConfig()
    freshness: FreshnessConfig = FreshnessConfig()
    risk: RiskConfig = RiskConfig()
    metrics: MetricsConfig = MetricsConfig()
    # The physical kill-switch button (docs/hardware.md); none by default.
    button: ButtonConfig | None = None
    alerts: AlertsConfig = AlertsConfig()
    pnl: PnlMonitorConfig = PnlMonitorConfig()
    config_drift: ConfigDriftConfig = ConfigDriftConfig()
    model: ModelMonitorConfig = ModelMonitorConfig()
    # Playbook 05's gates and arming (docs/playbook.md "Gates and arming").
    gates: GatesConfig = GatesConfig()
    deploys: DeploysConfig = DeploysConfig()
    # Broker API credential rotation (playbook 01 api-credentials; docs/playbook.md).
    credentials: CredentialsConfig = CredentialsConfig()
    # Drills against paper venues (gates P1, M1; docs/playbook.md "Drills").
    drill: DrillConfig = DrillConfig()

    def __post_init__(self) -> None:
        check_unique("venue names", [v.name for v in self.venues])
        clash = live_venue_clash(self.drill, self.venues)
        if clash is not None:
            raise ValueError(f"drill: {clash}")


def parse_config(text: str | bytes, *, source: str = "<config>") -> Config:
    """Decode TOML text into a Config.

    Raises:
        ConfigError: naming the file, the key and what was expected.
    """
    return decode_toml(text, Config, source=source)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and decode the configuration file at ``path``."""
    p = Path(path)
    try:
        text = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from exc
    return parse_config(text, source=str(p))


def venue_credentials(
    venue: VenueConfig, *, environ: dict[str, str] | None = None
) -> tuple[str | None, str | None]:
    """The venue's key id and secret: inline, or from ``$CREDENTIALS_DIRECTORY``.

    Raises:
        ConfigError: a named credential is missing or unreadable.
    """
    env = os.environ if environ is None else environ

    def read(name: str | None, inline: str | None, key: str) -> str | None:
        if name is None:
            return inline
        directory = env.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise ConfigError(
                f"venue {venue.name}: {key} names credential {name!r} but "
                "$CREDENTIALS_DIRECTORY is not set (use LoadCredential= in the unit)"
            )
        try:
            return (Path(directory) / name).read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"venue {venue.name}: cannot read credential {name!r}: {exc.strerror}"
            ) from exc

    return (
        read(venue.key_id_credential, venue.key_id, "key_id_credential"),
        read(venue.secret_key_credential, venue.secret_key, "secret_key_credential"),
    )
