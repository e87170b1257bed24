"""The desk's state at journal record N, so that start-up replays only what came after.

A checkpoint is the folded ``DeskState`` with the sequence number and the checksum chain
of the journal record it was folded up to, written atomically (``write_atomic``: a crash
leaves the old file or the new one whole) every ``CHECKPOINT_EVERY`` journaled events.
At start it is used only if the journal still holds that record with the same chain:
a checkpoint that does not decode, is ahead of the journal, or belongs to another
journal (a restored backup, a journal set aside) is ignored, and the whole journal is
replayed. It is a cache, never the truth: deleting it costs a longer start, nothing else.
"""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec

from supervisor.core.desk import DeskState
from supervisor.files import write_atomic

log = logging.getLogger("desk.checkpoint")

# How many journaled events between checkpoints: the most a start replays (plus one
# batch), about 0.1 s of folding on a 2-core VM (docs/benchmarks.md).
CHECKPOINT_EVERY = 1000
FILE_NAME = "checkpoint.msgpack"


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """The state folded up to journal record ``seq`` (whose chain is ``chain``)."""

    version: int = 1
    seq: int
    chain: str
    state: DeskState


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Checkpoint)


def path_in(state_dir: Path) -> Path:
    return state_dir / FILE_NAME


def write_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` atomically (blocking: run it in a worker thread).

    Raises:
        OSError: it could not be written (the old one, if any, stays whole).
    """
    write_atomic(path, _encoder.encode(checkpoint))


def read_checkpoint(path: Path) -> Checkpoint | None:
    """The checkpoint at ``path``; None when there is none or it does not decode
    (logged: a damaged checkpoint only costs a full replay). Blocking."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("checkpoint %s cannot be read (%s): replaying the whole journal", path, exc)
        return None
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.warning("checkpoint %s does not decode (%s): replaying the whole journal", path, exc)
        return None
