"""Kill-switch hardware bridges (GPIO and serial buttons) and the status lamp.

The bridges feed a press into the same executor as ``deskctl kill``
(``supervisor.runtime.Desk.kill`` with ``source="button"``, which opens a
``button-press`` P0 incident). The backends themselves are the subject of the
hardware-bridge work; nothing here is wired yet.
"""
