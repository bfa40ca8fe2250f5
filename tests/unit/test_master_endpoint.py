"""A call cut by the master's stop: a 503 in the access log, no traceback."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.types import Message

from slapgrid.master.access import STATE_KEY, TRUSTED
from slapgrid.master.app import _Endpoint, create_app
from slapgrid.master.params import Params
from slapgrid.master.routes import Route
from slapgrid.master.state import MasterState
from slapgrid.master.storage import MasterStore


async def never_answered(_master: MasterState, _p: Params, _request: Request) -> Any:
    await asyncio.Event().wait()


def test_a_call_still_waiting_when_the_master_stops_is_answered_503(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """uvicorn cancels what is left once its grace period is over: each call waiting then
    (a write queued behind others) gets its answer, where uvicorn logged a traceback each."""
    store = MasterStore(tmp_path / "master.db")
    master: MasterState = create_app(store).state.master
    route = Route("GET", "stalled", never_answered, lambda caller, p: None)
    endpoint = _Endpoint(master, route, master.run_blocking)
    sent: list[Message] = []
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/stalled",
        "query_string": b"",
        "headers": [],
        "state": {STATE_KEY: TRUSTED},
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    async def stop_while_waiting() -> None:
        call = asyncio.ensure_future(endpoint(scope, receive, send))
        await asyncio.sleep(0)  # the call is waiting
        call.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        await call  # ends, not cancelled

    try:
        asyncio.run(stop_while_waiting())
    finally:
        store.close()
    assert sent[0]["status"] == 503
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b"the master is stopping; ask again"
    assert scope["state"]["error"] == "the master is stopping; ask again"
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
