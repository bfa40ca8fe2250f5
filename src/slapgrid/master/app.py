"""The master's HTTP face: the route table served by Starlette over a `MasterStore`.

GET endpoints read the query string, POST endpoints the form body (the networkcache's
uploads stream theirs to disk: `cache.endpoints`). A wrong method gets 405, a missing
parameter or malformed XML 400, a caller the route's rule refuses 403 (`access`), an
unknown computer or partition 404; every error is logged and leaves the database
unchanged (each write is one transaction).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute
from starlette.types import Receive, Scope, Send

from slapgrid.master import access, credentials
from slapgrid.master.access_log import AccessLog
from slapgrid.master.bodies import bounded_body
from slapgrid.master.cache.store import CacheStore
from slapgrid.master.change_feed import RunBlocking
from slapgrid.master.endpoints import text
from slapgrid.master.errors import (
    BadRequest,
    MasterError,
    UnsupportedMediaType,
)
from slapgrid.master.params import Params
from slapgrid.master.pki.authority import Authority
from slapgrid.master.routes import ROUTES, Route
from slapgrid.master.runners import brief_writes, writes_in_thread
from slapgrid.master.state import MasterState
from slapgrid.master.storage import MasterStore

log = logging.getLogger("slapgrid.master")

MAX_BODY_BYTES = 16 << 20
"""Far above any SLAP call (a usage journal of a thousand partitions is a few MB)."""
MAX_FIELDS = 100
BODY_TIMEOUT = 30.0
FORM = "application/x-www-form-urlencoded"


def create_app(
    store: MasterStore,
    authority: Authority | None = None,
    cache: CacheStore | None = None,
    *,
    render_apart: bool = True,
) -> Starlette:
    """The ASGI application serving `store`, issuing certificates with `authority`, and
    the networkcache in `cache` (none: its endpoints answer 404); on a shared database,
    documents rendered in a process of their own if `render_apart`."""
    writes = writes_in_thread()
    master = MasterState(
        store, run_in_threadpool, brief_writes(store, writes), authority, cache, render_apart
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with master.serving():
            yield

    routes = [
        StarletteRoute(f"/{route.path}", _Endpoint(master, route, writes), methods=[route.method])
        for route in ROUTES
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.master = master  # the server wakes its long polls when it stops
    app.add_middleware(AccessLog)
    return app


class _Endpoint:
    """A route's ASGI app: read the parameters, answer, turn every failure into a status.

    An ASGI app rather than a function: Starlette would wrap a function in two more
    coroutines and four closures per call, which a fleet's open long polls hold by the
    thousand, and which every full garbage collection scans."""

    def __init__(self, master: MasterState, route: Route, writes: RunBlocking) -> None:
        self.master = master
        self.route = route
        self.on_loop = inspect.iscoroutinefunction(route.handler)
        self.run: RunBlocking = run_in_threadpool
        if route.method == "POST":
            self.run = master.run_brief_write if route.brief else writes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await self.answer(request)
        except asyncio.CancelledError:
            # the server stopping, its grace period over: an answer (and a line in the
            # access log) rather than a traceback for each call still queued
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            response = _error(request, 503, "the master is stopping; ask again")
        await response(scope, receive, send)

    async def answer(self, request: Request) -> Response:
        master, route = self.master, self.route
        try:
            if route.body == "raw":  # the handler reads the body, once the caller is let in
                p = Params(request.query_params.multi_items(), none_is_absent=False)
            else:
                p = await (_document(request) if route.body == "json" else _params(request))
            caller = access.caller_of(request)
            route.access(caller, p)  # refused before the store is touched
            if caller.partition and master.authority is not None:
                await run_in_threadpool(
                    credentials.check_partition_serial, master.store, caller.identity, caller.serial
                )
            if self.on_loop:
                return await route.handler(master, p, request)
            return await self.run(route.handler, master, p, request)
        except MasterError as exc:
            return _error(request, exc.status, str(exc))
        except HTTPException as exc:  # e.g. a form body that does not parse
            return _error(request, exc.status_code, str(exc.detail))
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            return _error(request, 500, "internal error")


async def _params(request: Request) -> Params:
    """The query string of a GET; the form body of a POST, where `None` means absent."""
    if request.method != "POST":
        return Params(request.query_params.multi_items(), none_is_absent=False)
    kind = request.headers.get("content-type", FORM).split(";")[0].strip().lower()
    if kind != FORM:  # what every SLAP client sends
        raise UnsupportedMediaType(f"a SLAP call's body is {FORM}, not {kind}")
    body = await bounded_body(request, MAX_BODY_BYTES, BODY_TIMEOUT)
    try:  # a byte or an escape that is not UTF-8 is refused, never replaced
        fields = parse_qsl(
            body.decode(), keep_blank_values=True, errors="strict", max_num_fields=MAX_FIELDS
        )
    except ValueError as exc:
        raise BadRequest(f"malformed form body: {exc}") from None
    return Params(fields, none_is_absent=True)


async def _document(request: Request) -> Params:
    """A JSON API call: its body is one JSON object."""
    try:
        document = json.loads(await bounded_body(request, MAX_BODY_BYTES, BODY_TIMEOUT) or b"{}")
    except ValueError:
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(document, dict):
        raise BadRequest("the body must be a JSON object")
    return Params(request.query_params.multi_items(), none_is_absent=False, document=document)


def _error(request: Request, status: int, message: str) -> Response:
    """An error answer; its reason goes into the request's access log line."""
    request.state.error = message
    return text(message, status)
