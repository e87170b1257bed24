"""One exception root for desk-supervisor, with families that also inherit the builtin.

Messages are lowercase, name the object and say what to do; tests match them exactly.
"""

from __future__ import annotations


class DeskError(Exception):
    """Base of every error desk-supervisor raises on purpose."""


class ConfigError(DeskError, ValueError):
    """The configuration file is missing, malformed or holds a bad value."""


class JournalError(DeskError, OSError):
    """The journal could not be opened, read or appended to."""


class JournalDamaged(JournalError):
    """The journal file is damaged, or a record fails its checksum or does not decode:
    it cannot be replayed as it is."""


class VenueError(DeskError):
    """A venue answered wrongly or not at all."""


class VenueUnavailable(VenueError, ConnectionError):
    """A venue could not be reached, or answered with a server error."""


class VenueRateLimited(VenueUnavailable):
    """A venue answered 429: it is up, but our request budget is spent (playbook 03 no-fills
    Q3 "Has the rate-limit budget been exhausted?")."""


class VenueTimeout(VenueError, TimeoutError):
    """A venue did not answer within its deadline."""


class VenueRejected(VenueError, PermissionError):
    """A venue refused a request (authentication, permission, or an order reject)."""


class VenueProtocolError(VenueError, ValueError):
    """A venue answered with a body that does not match the API."""


class ControlError(DeskError):
    """A control-socket request could not be served; carries the protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SupervisorUnreachable(DeskError, ConnectionError):
    """The supervisor's control socket could not be reached."""


class DrillRefused(DeskError, ValueError):
    """A drill was not started: no paper venues, a venue that could be live, or a drill
    already running."""
