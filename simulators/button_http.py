"""The demo's simulated GPIO button, pressed over HTTP: ``PUT /sim/button``.

``{"action": "press" | "release" | "cut" | "mend"}`` pushes the button, lets it go, cuts
its (normally-closed) wire or mends it; ``GET /sim/button`` shows its state. Drills on a
laptop go through the real bridge code (gpiozero on its MockFactory) to the real
kill-switch.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from .buttons import GpioButtonSim
from .http import Receive, Scope, Send, receive_request, send_json


class _Action(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    action: Literal["press", "release", "cut", "mend"]


class ButtonApp:
    """ASGI app over a ``GpioButtonSim``."""

    def __init__(self, sim: GpioButtonSim) -> None:
        self.sim = sim

    def state(self) -> dict[str, object]:
        return {"pressed": self.sim.pressed, "wire_cut": any(self.sim.cut),
                "wiring": self.sim.wiring}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = await receive_request(scope, receive, send)
        if request is None:
            return
        if request.path != "/sim/button":
            await send_json(send, 404, {"error": f"no route {request.path}"})
            return
        if request.method == "GET":
            await send_json(send, 200, self.state())
            return
        if request.method != "PUT":
            await send_json(send, 405, {"error": "use GET or PUT"},
                            headers=[(b"allow", b"GET, PUT")])
            return
        try:
            action = msgspec.json.decode(request.body, type=_Action).action
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            await send_json(send, 400, {"error": f"bad button request: {exc}; send "
                                                 '{"action": "press"|"release"|"cut"|"mend"}'})
            return
        match action:
            case "press":
                self.sim.press()
            case "release":
                self.sim.release()
            case "cut":
                self.sim.cut_wire()
            case "mend":
                self.sim.mend_wire()
        await send_json(send, 200, self.state())
