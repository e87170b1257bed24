"""A simulated inference worker for the demo: ``GET /healthz`` answers 200 with the live
model_hash (playbook 04 "Inference worker liveness"; gate D2).

``PUT /sim/healthz`` with ``{"model_hash": "..."}`` simulates a deploy of another model
(D2 blocks new exposure), ``{"down": true}`` a dead worker (2 failures in 60 s page).
"""

from __future__ import annotations

import msgspec

from .http import Receive, Scope, Send, receive_request, send_json


class _Change(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    model_hash: str | None = None
    down: bool | None = None


class InferenceWorker:
    """ASGI app: the worker's health endpoint, with test verbs under /sim/."""

    def __init__(self, model_hash: str) -> None:
        self.model_hash = model_hash
        self.down = False

    def state(self) -> dict[str, object]:
        return {"model_hash": self.model_hash, "down": self.down}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = await receive_request(scope, receive, send)
        if request is None:
            return
        if request.path == "/healthz" and request.method == "GET":
            if self.down:
                await send_json(send, 503, {"error": "worker down (simulated)"})
            else:
                await send_json(send, 200, {"model_hash": self.model_hash, "ok": True})
            return
        if request.path == "/sim/healthz" and request.method in ("GET", "PUT"):
            if request.method == "PUT":
                try:
                    change = msgspec.json.decode(request.body, type=_Change)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    await send_json(send, 400, {"error": f"bad request: {exc}; send "
                                                         '{"model_hash": str, "down": bool}'})
                    return
                if change.model_hash is not None:
                    self.model_hash = change.model_hash
                if change.down is not None:
                    self.down = change.down
            await send_json(send, 200, self.state())
            return
        await send_json(send, 404, {"error": f"no route {request.method} {request.path}"})
