"""One log line per request: client address and identity, method, path, status, duration
(and why it failed).

Successes are logged at INFO, errors at WARNING, so every error leaves a line; the reason is
what the app put in the request's `state.error`.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slapgrid.master.access import ANONYMOUS, STATE_KEY

access_log = logging.getLogger("slapgrid.master.access")


class AccessLog:
    """ASGI middleware writing the access log line once the answer is sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            level = logging.INFO if status < 400 else logging.WARNING
            if access_log.isEnabledFor(level):
                client = scope.get("client") or ("-", 0)
                state = scope.get("state", {})
                reason = state.get("error")
                access_log.log(
                    level,
                    "%s %s %s %d %.1fms (%s)%s",
                    client[0],
                    scope["method"],
                    scope["path"],
                    status,
                    (time.perf_counter() - start) * 1000,
                    state.get(STATE_KEY, ANONYMOUS),
                    f" {reason}" if reason else "",
                )
