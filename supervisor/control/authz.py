"""Who may do what on the control socket.

The socket's mode (0660) and group decide who can connect at all. Among those:
read-only commands and the engine's telemetry are open; mutating commands need the
caller (from SO_PEERCRED) to be in ``control.operators`` (a user name, a uid, or
``@group``), except that ``kill`` is open to everyone who can connect unless
``control.kill_open`` is false: a kill-switch nobody can press is worse than one anyone
can. An empty ``operators`` list means everyone who can connect is an operator. Root and
the daemon's own user are always operators.
"""

from __future__ import annotations

import grp
import os
import pwd

import msgspec

from supervisor.config import ControlConfig

# ``check`` runs a monitor now: it only evaluates (a finding it makes is the monitor's own,
# as at its scheduled time), so it is read-only. ``tree`` walks a recovery tree over the
# status and ``runbook`` shows a procedure: neither changes anything.
READ_ONLY = frozenset({"status", "watch", "incidents", "freshness", "alerts", "alert_noise",
                       "check", "tree", "runbook", "report", "gates", "runbook_runs",
                       "credentials", "calendar"})
ENGINE = frozenset({"telemetry"})
MUTATING = frozenset({"kill", "ack", "resolve", "resume", "reconcile", "symbol_halt",
                      "arm", "disarm", "gate_attest", "throttle",
                      # checklist runs (journaled with who) and credential rotation
                      "runbook_start", "runbook_done", "runbook_verify", "runbook_close",
                      "credentials_stage", "credentials_check", "credentials_activate",
                      "credentials_revoke", "drill", "route", "flatten"})


class Caller(msgspec.Struct, frozen=True):
    """Who is on the other end of a control connection (from SO_PEERCRED)."""

    uid: int | None = None
    gid: int | None = None
    pid: int | None = None

    @property
    def user(self) -> str:
        if self.uid is None:
            return "unknown"
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return str(self.uid)

    @property
    def actor(self) -> str:
        """How the journal names this caller: user name and uid."""
        if self.uid is None:
            return "operator:unknown"
        return f"operator:{self.user}(uid={self.uid})"

    def groups(self) -> set[str]:
        """Names of the caller's groups (primary and supplementary)."""
        names: set[str] = set()
        if self.gid is not None:
            try:
                names.add(grp.getgrgid(self.gid).gr_name)
            except KeyError:
                names.add(str(self.gid))
        user = self.user
        try:
            names.update(g.gr_name for g in grp.getgrall() if user in g.gr_mem)
        except OSError:
            pass
        return names


def _member(caller: Caller, allowed: list[str]) -> bool:
    for entry in allowed:
        if entry.startswith("@"):
            if entry[1:] in caller.groups():
                return True
        elif entry == caller.user or (caller.uid is not None and entry == str(caller.uid)):
            return True
    return False


def is_operator(caller: Caller, allowed: list[str], *, daemon_uid: int | None = None) -> bool:
    """Whether ``caller`` is in ``allowed`` (empty: everyone), root, or the daemon's user."""
    daemon_uid = os.geteuid() if daemon_uid is None else daemon_uid
    if caller.uid is not None and caller.uid in (0, daemon_uid):
        return True
    return not allowed or _member(caller, allowed)


def authorize(cmd: str, caller: Caller, control: ControlConfig,
              *, daemon_uid: int | None = None) -> str | None:
    """None when ``caller`` may run ``cmd``; else why not, in one line."""
    if cmd in READ_ONLY or cmd in ENGINE:
        return None
    if cmd == "kill" and control.kill_open:
        return None
    allowed = control.operators
    # Arming lets capital move, as resuming does: the same people decide both.
    if cmd in ("resume", "arm") and control.resume_operators:
        allowed = control.resume_operators
    if is_operator(caller, allowed, daemon_uid=daemon_uid):
        return None
    which = "control.resume_operators" if allowed is control.resume_operators else (
        "control.operators")
    return (f"{caller.user} (uid {caller.uid}) may not {cmd}: not in {which}; "
            "ask an authorised operator")
