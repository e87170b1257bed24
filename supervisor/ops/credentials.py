"""Broker API credential rotation (playbook 01 api-credentials; playbook 05 gate P3).

The credential store is a directory (``[credentials] store``, default
``STATE_DIR/credentials``) laid out as systemd's ``$CREDENTIALS_DIRECTORY`` is, one value
a file: ``STORE/VENUE/SLOT/key_id`` and ``STORE/VENUE/SLOT/secret_key``, directories 0700,
files 0600, written atomically. Slots: ``staged`` (the new key, waiting), ``active`` (in
use; the daemon prefers it to the configured one at start), ``previous`` (the key it
replaced, until revoked).

The flow, each step journaled with who (supervisor/core/events.py ``Credential*``) and
judged by the pure desk (supervisor/core/ledger.py):

1. ``stage``: the new key goes into the store with an activation time (playbook 01 step 02:
   "Push the new credential to the secret manager with a future activation timestamp").
2. ``check``: GET /v2/account with the staged key on a separate connection, nothing
   else touched (step 03: "a non-mutating call (account balance)").
3. ``activate``: refused before the activation time or without a passed check; the
   live adapter switches to the new key at once, the kill path's warm line with it
   (step 04: "Activate"); the previous key may be revoked ``revoke_after_s`` later.
4. ``revoke``: refused before that ("wait 5 minutes"), and refused while the venue still
   accepts the previous key (the supervisor cannot revoke at the broker: the operator
   does, in the broker UI; the supervisor confirms it with GET /v2/account answering
   401/403). The previous key leaves the store.

Only fingerprints (sha256 of key id and secret, shortened) reach the journal, status and
logs; secrets never do.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import msgspec
import trio

from supervisor.config import venue_name_problem
from supervisor.core.errors import ControlError, VenueError, VenueRejected
from supervisor.core.events import (
    CredentialActivated,
    CredentialChecked,
    CredentialRevoked,
    CredentialStaged,
)
from supervisor.core.ledger import Refusal, VenueCredential, find_credential, fold_credential
from supervisor.files import write_atomic
from supervisor.venues.alpaca import HttpVenue

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from supervisor.config import Config
    from supervisor.control.authz import Caller
    from supervisor.core.desk import DeskState
    from supervisor.core.events import AnyEvent


class Desk(Protocol):
    """What credential rotation reads and asks of the desk (``supervisor.runtime.desk.Desk``),
    so that it depends on this and not on the runtime."""

    config: Config
    state: DeskState
    venues: Sequence[HttpVenue]
    wall: Callable[[], float]

    async def command(self, event: AnyEvent) -> DeskState: ...

Slot = Literal["staged", "active", "previous"]

# ``activate_at`` of a staged key, relative to the wall clock at ``stage``: a little in
# the past is "at once" (a clock skew, a slow operator), more than a year ahead is a typo
# (playbook 01 api-credentials step 02: "a future activation timestamp"; rotations run
# quarterly, playbook 05 gate P3).
ACTIVATE_AT_PAST_S = 86_400.0
ACTIVATE_AT_FUTURE_S = 366 * 86_400.0


def fingerprint(key_id: str | None, secret_key: str | None) -> str | None:
    """A short, one-way name for a credential (None: no credential)."""
    if key_id is None and secret_key is None:
        return None
    digest = hashlib.sha256(f"{key_id or ''}\0{secret_key or ''}".encode()).hexdigest()
    return f"sha256:{digest[:16]}"


class CredentialStore:
    """The credential store directory (see the module docstring). Sync: small files."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _dir(self, venue: str, slot: Slot) -> Path:
        problem = venue_name_problem(venue)
        if problem is not None:
            raise ValueError(problem)
        return self.root / venue / slot

    def read(self, venue: str, slot: Slot) -> tuple[str, str] | None:
        """The (key id, secret) in ``slot``, or None when the slot is empty."""
        where = self._dir(venue, slot)
        try:
            key_id = (where / "key_id").read_text().strip()
            secret = (where / "secret_key").read_text().strip()
        except FileNotFoundError:
            return None
        return key_id, secret

    def write(self, venue: str, slot: Slot, key_id: str, secret_key: str) -> None:
        where = self._dir(venue, slot)
        for d in (self.root, self.root / venue, where):
            d.mkdir(mode=0o700, exist_ok=True)
        for name, value in (("key_id", key_id), ("secret_key", secret_key)):
            write_atomic(where / name, value.encode() + b"\n")
            os.chmod(where / name, 0o600)

    def move(self, venue: str, source: Slot, target: Slot) -> None:
        """Replace ``target`` with ``source`` (``source`` becomes empty)."""
        self.delete(venue, target)
        os.replace(self._dir(venue, source), self._dir(venue, target))

    def delete(self, venue: str, slot: Slot) -> None:
        shutil.rmtree(self._dir(venue, slot), ignore_errors=True)


def store_for(config_store: str, state_dir: str | os.PathLike[str]) -> CredentialStore:
    return CredentialStore(config_store or Path(state_dir) / "credentials")


def desk_store(desk: Desk) -> CredentialStore:
    return store_for(desk.config.credentials.store, desk.config.state_dir)


# --- the flow (the control socket's credentials_* commands) ----------------------------


def _venue(desk: Desk, name: str) -> HttpVenue:
    for v in desk.venues:
        if v.name == name:
            return v
    raise ControlError("not_found", f"no venue {name!r}; venues: "
                       + (", ".join(v.name for v in desk.venues) or "none configured"))


async def probe_account(venue: HttpVenue, key_id: str, secret_key: str) -> dict[str, Any]:
    """GET /v2/account with the given key on a connection of its own: non-mutating.

    Raises:
        VenueError: as ``HttpVenue.account`` (VenueRejected: the key was refused).
    """
    async with HttpVenue(f"{venue.name} (credential check)", venue.base_url, key_id=key_id,
                         secret_key=secret_key, timeout_s=venue.timeout_s,
                         cancel_scope="prefix", client_order_prefix="-") as probe:
        return await probe.account()


async def _command(desk: Desk, event: Any) -> VenueCredential:
    await desk.command(event)
    return find_credential(desk.state.credentials, event.venue)


async def stage(desk: Desk, venue_name: str, key_id: str, secret_key: str,
                activate_at: float | None, *, caller: Caller) -> dict[str, Any]:
    """Put a new key in the store's ``staged`` slot and journal it."""
    venue = _venue(desk, venue_name)
    if not key_id.strip() or not secret_key.strip():
        raise ControlError("bad_request", "a credential needs a non-empty key id and secret")
    key_id, secret_key = key_id.strip(), secret_key.strip()
    now = desk.wall()
    if activate_at is not None:
        _check_activate_at(activate_at, now)
    problem = venue_name_problem(venue.name)
    if problem is not None:  # the config refuses such names; an adapter built otherwise
        raise ControlError("bad_request", problem)
    fp = fingerprint(key_id, secret_key)
    assert fp is not None
    if fp == fingerprint(*venue.credentials()):
        raise ControlError("bad_request", f"venue {venue.name}: that credential is already "
                                          "the live one")
    store = desk_store(desk)
    await trio.to_thread.run_sync(store.write, venue.name, "staged", key_id, secret_key)
    c = await _command(desk, CredentialStaged(ts=now, actor=caller.actor, venue=venue.name,
                                              fingerprint=fp,
                                              activate_at=now if activate_at is None
                                              else activate_at))
    return credential_status(c)


def _check_activate_at(activate_at: float, now: float) -> None:
    """Refuse an activation time outside [now - 1 day, now + 366 days] (or not a number):
    journaled, it would be folded into every later answer for the venue."""
    def utc(ts: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))

    earliest, latest = now - ACTIVATE_AT_PAST_S, now + ACTIVATE_AT_FUTURE_S
    if not math.isfinite(activate_at) or not earliest <= activate_at <= latest:
        raise ControlError(
            "bad_request", f"activate_at {activate_at!r} is out of range: give an epoch time "
            f"from {utc(earliest)} to {utc(latest)} (now - 1 day to now + 366 days), or "
            "none to activate as soon as the check passes")


async def _staged(store: CredentialStore, venue: HttpVenue) -> tuple[str, str]:
    """The staged (key id, secret) of ``venue``; refused when the slot is empty."""
    staged = await trio.to_thread.run_sync(store.read, venue.name, "staged")
    if staged is None:
        raise ControlError("bad_state", f"venue {venue.name}: no staged credential in the "
                                        "store: deskctl credentials stage first")
    return staged


async def check(desk: Desk, venue_name: str, *, caller: Caller) -> dict[str, Any]:
    """Try the staged key with GET /v2/account and journal the verdict (pass or fail)."""
    venue = _venue(desk, venue_name)
    staged = await _staged(desk_store(desk), venue)
    try:
        account = await probe_account(venue, *staged)
    except VenueRejected as exc:
        ok, detail = False, f"the venue refused the new credential: {exc}"
    except VenueError as exc:
        ok, detail = False, f"the check could not run: {exc}"
    else:
        ok = True
        detail = (f"GET /v2/account answered 200 with the new credential (account status "
                  f"{account.get('status', '?')})")
    c = await _command(desk, CredentialChecked(
        ts=desk.wall(), actor=caller.actor, venue=venue.name,
        fingerprint=fingerprint(*staged) or "", ok=ok, detail=detail))
    return credential_status(c)


async def activate(desk: Desk, venue_name: str, *, caller: Caller) -> dict[str, Any]:
    """Switch the live adapter to the staged key (the desk refuses it too early or
    unchecked); the store's slots follow: active -> previous, staged -> active."""
    venue = _venue(desk, venue_name)
    store = desk_store(desk)
    staged = await _staged(store, venue)
    old = venue.credentials()
    event = CredentialActivated(
        ts=desk.wall(), actor=caller.actor, venue=venue.name,
        fingerprint=fingerprint(*staged) or "", previous=fingerprint(*old),
        revoke_after_s=desk.config.credentials.revoke_after_s)

    def rotate_files() -> None:
        if old[0] is not None and old[1] is not None:
            store.write(venue.name, "previous", old[0], old[1])
        store.move(venue.name, "staged", "active")

    try:
        await desk.command(event)  # refused: nothing switched, nothing moved
    finally:
        # Applied (even if the journal is failing: the change is in force in memory):
        # the adapter and the store follow at once.
        c = find_credential(desk.state.credentials, venue.name)
        if c.active == event.fingerprint and c.activated_at == event.ts:
            venue.set_credentials(*staged)
            await trio.to_thread.run_sync(rotate_files)
    return credential_status(c)


async def revoke(desk: Desk, venue_name: str, *, caller: Caller) -> dict[str, Any]:
    """Confirm with the venue that the previous key is refused, then drop it from the
    store and journal the revocation (the desk refuses it within ``revoke_after_s``)."""
    venue = _venue(desk, venue_name)
    store = desk_store(desk)
    c = find_credential(desk.state.credentials, venue.name)
    # Too early, or nothing to revoke: the desk would refuse even a confirmed revocation,
    # so say so before asking the venue anything.
    early = fold_credential(desk.state.credentials, CredentialRevoked(
        ts=desk.wall(), actor=caller.actor, venue=venue.name, fingerprint=c.previous or "",
        confirmed=True, detail=""))
    if isinstance(early, Refusal):
        raise ControlError(early.code, early.reason)
    previous = await trio.to_thread.run_sync(store.read, venue.name, "previous")
    if previous is None:
        confirmed, detail = False, (
            "the previous credential is not in the store, so the venue cannot be asked "
            "whether it is revoked")
    else:
        try:
            await probe_account(venue, *previous)
        except VenueRejected as exc:
            confirmed, detail = True, f"the venue refuses the previous credential: {exc}"
        except VenueError as exc:
            confirmed, detail = False, f"cannot confirm the revocation: {exc}"
        else:
            confirmed, detail = False, (
                "the venue still accepts the previous credential (GET /v2/account answered "
                "200): revoke it in the broker UI, then run revoke again")
    c = await _command(desk, CredentialRevoked(
        ts=desk.wall(), actor=caller.actor, venue=venue.name,
        fingerprint=c.previous or "", confirmed=confirmed, detail=detail))
    await trio.to_thread.run_sync(store.delete, venue.name, "previous")
    return credential_status(c)


def credential_status(c: VenueCredential) -> dict[str, Any]:
    return msgspec.to_builtins(c)


def credentials_status(desk: Desk) -> dict[str, Any]:
    """``status["credentials"]``: each venue's lifecycle, the live fingerprint, and the
    last finished rotation on any venue (playbook 05 gate P3 reads ``last_rotation``)."""
    venues: dict[str, Any] = {}
    last = None
    for v in desk.venues:
        c = find_credential(desk.state.credentials, v.name)
        row = credential_status(c)
        row["live"] = fingerprint(*v.credentials())
        venues[v.name] = row
        r = c.last_rotation
        if r is not None and (last is None or r.revoked_at > last.revoked_at):
            last = r
    return {
        "venues": venues,
        "revoke_after_s": desk.config.credentials.revoke_after_s,
        "last_rotation": None if last is None else {
            **msgspec.to_builtins(last), "at": last.revoked_at},
    }
