"""desk-supervisor: keeps an automated trading desk safe.

The core: the pure desk state machine (``desk``), its events (``events``), the journal,
the kill-switch executor, the control socket and its clients, and the wiring of the
daemon. Public entry points are the ``desk-supervisor`` and ``deskctl`` commands and
``supervisor.client`` for programs that talk to a running supervisor.
"""

__version__ = "0.1.0"
