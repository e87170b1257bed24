"""The fault-injection API every simulator serves under `/sim/fault`.

Each simulator declares its fault kinds as tagged `Fault` Structs (the tag is the
kind, the fields are its parameters with their bounds) and hands them to a `FaultBook`:

    GET    /sim/fault      -> 200 {"faults": [{"kind": K, ...params}, ...]}
    PUT    /sim/fault      {"kind": K, ...params} -> 200 {"faults": [...]}; sets K,
                           replacing an earlier K; 400 {"error": msg} on a bad request
    DELETE /sim/fault      -> 200 {"faults": []}
    DELETE /sim/fault/K    -> 200 {"faults": [...]}; 404 {"error": msg} for an unknown K
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

import msgspec
import trio

from simulators.http import Request, Send, send_json

__all__ = ["Fault", "FaultBook", "FaultError"]

_F = TypeVar("_F", bound="Fault")


class Fault(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="kind"):
    """Base of every fault kind; subclasses set `tag="<kind>"` and declare parameters."""


class FaultError(ValueError):
    """A fault request named an unknown kind or carried a bad parameter."""


class FaultBook:
    """The faults in force in one simulator, at most one per kind.

    Every change replaces `changed` (after setting the old event), so a task can wait
    for the next change with `await book.changed.wait()` or `await book.wait_while(K)`.
    """

    def __init__(
        self, kinds: Iterable[type[Fault]], *, check: Callable[[Fault], None] | None = None
    ) -> None:
        """Build an empty book.

        Args:
            kinds: the fault classes this simulator knows.
            check: raises FaultError for a fault that is well-formed but wrong for this
                simulator (e.g. a vendor it does not have).
        """
        self._check = check
        self._kinds: dict[str, type[Fault]] = {}
        for kind in kinds:
            tag = kind.__struct_config__.tag
            if not isinstance(tag, str):
                raise TypeError(f"fault class {kind.__name__} needs a string tag")
            self._kinds[tag] = kind
        self._active: dict[str, Fault] = {}
        self._set_at: dict[str, float] = {}
        self.changed = trio.Event()

    @property
    def kinds(self) -> tuple[str, ...]:
        """The fault kinds this simulator knows, in declaration order."""
        return tuple(self._kinds)

    def active(self) -> list[Fault]:
        """The faults in force, in the order they were set."""
        return list(self._active.values())

    def get(self, kind: type[_F]) -> _F | None:
        """The fault of this class in force, or None."""
        fault = self._active.get(_tag(kind))
        return fault if isinstance(fault, kind) else None

    def set_at(self, kind: type[Fault]) -> float | None:
        """The trio time at which the fault of this class was (last) set, or None."""
        return self._set_at.get(_tag(kind))

    def __contains__(self, kind: object) -> bool:
        if isinstance(kind, type) and issubclass(kind, Fault):
            return _tag(kind) in self._active
        return kind in self._active

    def set(self, fault: Fault) -> None:
        """Put `fault` in force, replacing an earlier fault of its kind."""
        tag = _tag(type(fault))
        if tag not in self._kinds:
            raise FaultError(f"unknown fault kind {tag!r}; known kinds: {self._known()}")
        if self._check is not None:
            self._check(fault)
        self._active.pop(tag, None)
        self._active[tag] = fault
        self._set_at[tag] = trio.current_time()
        self._notify()

    def clear(self, kind: str | type[Fault] | None = None) -> None:
        """Clear one kind (KeyError if unknown to this simulator), or every fault."""
        if kind is None:
            self._active.clear()
            self._set_at.clear()
        else:
            tag = kind if isinstance(kind, str) else _tag(kind)
            if tag not in self._kinds:
                raise KeyError(tag)
            self._active.pop(tag, None)
            self._set_at.pop(tag, None)
        self._notify()

    def parse(self, body: bytes) -> Fault:
        """Decode a PUT body into its fault; FaultError names what was wrong."""
        try:
            raw = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise FaultError(f"fault body is not valid json: {exc}") from exc
        if not isinstance(raw, dict):
            raise FaultError('fault body must be a json object like {"kind": ...}')
        kind = raw.get("kind")
        if kind is None:
            raise FaultError(f"fault body needs a 'kind'; known kinds: {self._known()}")
        if not isinstance(kind, str) or kind not in self._kinds:
            raise FaultError(f"unknown fault kind {kind!r}; known kinds: {self._known()}")
        try:
            fault = msgspec.convert(raw, self._kinds[kind])
        except msgspec.ValidationError as exc:
            raise FaultError(f"bad parameter for fault {kind!r}: {exc}") from exc
        if self._check is not None:
            self._check(fault)
        return fault

    async def wait_while(self, kind: type[Fault]) -> None:
        """Return once no fault of this class is in force (at once if none is)."""
        while kind in self:
            await self.changed.wait()

    async def handle(self, request: Request, send: Send) -> bool:
        """Serve the `/sim/fault` routes; False (nothing sent) for any other path."""
        path = request.path.rstrip("/")
        if path == "/sim/fault":
            if request.method == "GET":
                await self._send_faults(send)
            elif request.method == "PUT":
                try:
                    fault = self.parse(request.body)
                except FaultError as exc:
                    await send_json(send, 400, {"error": str(exc)})
                    return True
                self.set(fault)
                await self._send_faults(send)
            elif request.method == "DELETE":
                self.clear()
                await self._send_faults(send)
            else:
                await _method_not_allowed(send, b"GET, PUT, DELETE")
            return True
        if path.startswith("/sim/fault/"):
            kind = path.removeprefix("/sim/fault/")
            if request.method != "DELETE":
                await _method_not_allowed(send, b"DELETE")
            elif kind not in self._kinds:
                message = f"unknown fault kind {kind!r}; known kinds: {self._known()}"
                await send_json(send, 404, {"error": message})
            else:
                self.clear(kind)
                await self._send_faults(send)
            return True
        return False

    async def _send_faults(self, send: Send) -> None:
        await send_json(send, 200, {"faults": self.active()})

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def _known(self) -> str:
        return ", ".join(self._kinds)


async def _method_not_allowed(send: Send, allow: bytes) -> None:
    await send_json(send, 405, {"error": "method not allowed"}, headers=[(b"allow", allow)])


def _tag(kind: type[Fault]) -> str:
    return str(kind.__struct_config__.tag)
