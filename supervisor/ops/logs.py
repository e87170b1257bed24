"""Logging: one line per event, with syslog priority prefixes that journald understands.

Under systemd (``$JOURNAL_STREAM`` set) each line starts with ``<N>`` (3 error, 4
warning, 6 info, ...) and carries no timestamp (journald adds one); in a terminal it
gets a timestamp instead. Fields the desk cares about (incident id, class, severity,
mode) ride on ``extra=`` and are appended as ``key=value``, so ``journalctl -u
desk-supervisor | grep incident=INC-...`` finds an incident's whole story. Secrets are
never formatted here: venue errors are scrubbed where they are made
(``supervisor.venues.alpaca``) and the configuration is never logged.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TextIO

# RFC 5424 severities, as sd-daemon(3) prefixes.
PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
            logging.DEBUG: 7}
FIELDS = ("incident", "incident_class", "severity", "mode", "venue", "actor")


class DeskFormatter(logging.Formatter):
    """``<3>desk.killswitch: message key=value`` (journald) or a timestamped line."""

    def __init__(self, *, journald: bool) -> None:
        super().__init__()
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        fields = " ".join(f"{k}={getattr(record, k)}" for k in FIELDS
                          if getattr(record, k, None) is not None)
        line = f"{record.name}: {message}" + (f" {fields}" if fields else "")
        if record.exc_info:
            # One event, one line: the traceback is folded into it.
            line += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        if self.journald:
            return f"<{PRIORITY.get(record.levelno, 6)}>{line}"
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        return f"{stamp} {record.levelname} {line}"


def setup_logging(verbose: bool = False, *, stream: TextIO | None = None,
                  journald: bool | None = None) -> None:
    """Send every log line to ``stream`` (stderr), formatted for journald or a terminal."""
    if journald is None:
        journald = bool(os.environ.get("JOURNAL_STREAM"))
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(DeskFormatter(journald=journald))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("httpx", "httpcore", "hypercorn.error", "hypercorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
