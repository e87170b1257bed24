"""One way to decode a TOML configuration document, with errors that name the source,
the key and what was expected (used by the main config, the limits file and the
button section), and the checks its sections share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import msgspec

from supervisor.core.errors import ConfigError

T = TypeVar("T")


def decode_toml(text: str | bytes, type_: type[T], *, source: str) -> T:
    """Decode ``text`` into ``type_``.

    Raises:
        ConfigError: ``SOURCE: <what msgspec says, with the key path>`` or ``SOURCE: not
            valid TOML: ...``.
    """
    try:
        return msgspec.toml.decode(text, type=type_)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc


def check_unique(what: str, values: Sequence[str]) -> None:
    """For a section's ``__post_init__``: refuse repeated names in ``values``.

    Raises:
        ValueError: ``WHAT must be unique, repeated: A, B`` (sorted).
    """
    dupes = sorted({v for v in values if values.count(v) > 1})
    if dupes:
        raise ValueError(f"{what} must be unique, repeated: {', '.join(dupes)}")
