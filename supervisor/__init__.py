"""desk-supervisor: keeps an automated trading desk safe.

The folders are the layers (docs/architecture.md "Where things are"): ``core`` (the pure
desk state machine, events, protocol messages), ``venues``, ``runtime`` (the imperative
shell: Desk, journal, kill-switch), ``control`` (socket server, client, gate), ``cli``,
``ops`` and ``playbook``. Public entry points are the ``desk-supervisor`` and ``deskctl``
commands and ``supervisor.control.client`` for programs that talk to a running
supervisor.
"""

__version__ = "0.1.0"
