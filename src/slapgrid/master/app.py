"""The master's HTTP face: one Starlette route per SLAP endpoint, over a `MasterStore`.

GET endpoints read the query string, POST endpoints the form body (the literal `None` the
reference client sends for absent values counts as absent). A wrong method gets 405, a
missing parameter or malformed XML 400, an unknown computer or partition 404; every error is
logged and leaves the database unchanged (each write is one transaction).

getFullComputerInformation is served from a per-computer cache of the marshalled document,
keyed by the computer's generation, with an `ETag` honoured through `If-None-Match`. Our own
agent can long-poll `/slapgrid/changes` to react as soon as a computer's generation moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slapgrid.master.storage import (
    DEFAULT_SOFTWARE_TYPE,
    BadRequest,
    InstanceRequest,
    MasterError,
    MasterStore,
    NotFound,
    now_us,
)
from slapgrid.slap import marshal
from slapgrid.slap.documents import SoftwareInstance
from slapgrid.slap.errors import ProtocolError

log = logging.getLogger("slapgrid.master")
access_log = logging.getLogger("slapgrid.master.access")

XML = "text/xml; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
MAX_BODY_BYTES = 64 << 20
MAX_POLL_SECONDS = 60.0
REFRESH_DELAY = 0.05  # seconds: writes within it cost one re-render
CHANGES_PATH = "/slapgrid/changes"


class Params:
    """The parameters of one call; `p["name"]` is mandatory, `p.get("name")` is not."""

    def __init__(self, values: Mapping[str, Any], *, none_is_absent: bool) -> None:
        self._values: dict[str, str] = {}
        for key, value in values.items():
            if not isinstance(value, str):
                raise BadRequest(f"parameter {key!r} must be a plain form field")
            if not (none_is_absent and value == "None"):
                self._values[key] = value

    def __getitem__(self, name: str) -> str:
        try:
            return self._values[name]
        except KeyError:
            raise BadRequest(f"missing parameter {name!r}") from None

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._values.get(name, default)

    def marshalled(self, name: str, default: Any) -> Any:
        """An xml_marshaller document carried in a field; absent → `default`."""
        raw = self._values.get(name)
        if raw is None:
            return default
        try:
            return marshal.loads(raw)
        except ProtocolError as exc:
            raise BadRequest(f"parameter {name!r}: {exc}") from None


Handler = Callable[[MasterStore, Params, Request], Any]
_ENDPOINTS: list[tuple[str, str, Handler]] = []


def _endpoint(method: str, name: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        _ENDPOINTS.append((method, name, handler))
        return handler

    return register


def _xml(value: Any) -> Response:
    return Response(marshal.dumps(value), media_type=XML)


def _text(text: str, status: int = 200) -> Response:
    return Response(text, status_code=status, media_type=TEXT)


def _slave(p: Params) -> str | None:
    """`slave_reference`, where the master treats any casing of `None` as absent."""
    value = p.get("slave_reference")
    return None if not value or value.lower() == "none" else value


# --- read endpoints ------------------------------------------------------------------------


@_endpoint("GET", "registerComputerPartition")
def _register_partition(store: MasterStore, p: Params, _: Request) -> Response:
    document = store.partition_document(p["computer_reference"], p["computer_partition_reference"])
    return _xml(document.to_wire())


@_endpoint("GET", "getComputerPartitionCertificate")
def _certificate(store: MasterStore, p: Params, _: Request) -> Response:
    return _xml(store.partition_certificate(p["computer_id"], p["computer_partition_id"]))


@_endpoint("GET", "getComputerPartitionStatus")
def _partition_status(store: MasterStore, p: Params, _: Request) -> Response:
    return _xml(store.partition_status(p["computer_id"], p["computer_partition_id"]))


@_endpoint("GET", "getSoftwareInstallationStatus")
def _software_status(store: MasterStore, p: Params, _: Request) -> Response:
    return _xml(store.software_status(p["computer_id"], p["url"]))


@_endpoint("GET", "getHostingSubscriptionIpList")
def _hosting_ip_list(store: MasterStore, p: Params, _: Request) -> Response:
    return _xml(store.hosting_ip_list(p["computer_id"], p["computer_partition_id"]))


@_endpoint("GET", "getHateoasUrl")
def _hateoas(store: MasterStore, p: Params, _: Request) -> Response:
    raise NotFound("this master has no HATEOAS API")


# --- software release reports --------------------------------------------------------------


def _software_report(event: str) -> Handler:
    def handler(store: MasterStore, p: Params, _: Request) -> Response:
        store.report_software(p["computer_id"], p["url"], event, p.get("error_log") or "")
        return _text("OK")

    return handler


for _name, _event in (
    ("buildingSoftwareRelease", "building"),
    ("availableSoftwareRelease", "available"),
    ("destroyedSoftwareRelease", "destroyed"),
    ("softwareReleaseError", "error"),
):
    _endpoint("POST", _name)(_software_report(_event))


# --- partition reports ---------------------------------------------------------------------


def _partition_report(event: str) -> Handler:
    def handler(store: MasterStore, p: Params, _: Request) -> Response:
        store.report_partition(
            p["computer_id"],
            p["computer_partition_id"],
            event,
            p.get("error_log") or "",
            _slave(p),
        )
        return _text("OK")

    return handler


for _name, _event in (
    ("startedComputerPartition", "started"),
    ("stoppedComputerPartition", "stopped"),
    ("softwareInstanceError", "error"),
):
    _endpoint("POST", _name)(_partition_report(_event))


@_endpoint("POST", "destroyedComputerPartition")
def _destroyed(store: MasterStore, p: Params, _: Request) -> Response:
    return _text(store.destroyed_partition(p["computer_id"], p["computer_partition_id"]))


@_endpoint("POST", "softwareInstanceBang")
def _bang(store: MasterStore, p: Params, _: Request) -> Response:
    store.bang(p["computer_id"], p["computer_partition_id"], p.get("message") or "")
    return _text("OK")


@_endpoint("POST", "softwareInstanceRename")
def _rename(store: MasterStore, p: Params, _: Request) -> Response:
    store.rename(p["computer_id"], p["computer_partition_id"], p["new_name"], _slave(p))
    return _text("OK")


@_endpoint("POST", "setComputerPartitionConnectionXml")
def _set_connection(store: MasterStore, p: Params, _: Request) -> Response:
    parameters = p.marshalled("connection_xml", None)
    if parameters is None:
        raise BadRequest("missing parameter 'connection_xml'")
    store.set_connection(p["computer_id"], p["computer_partition_id"], parameters, _slave(p))
    return _text("OK")


@_endpoint("POST", "updateComputerPartitionRelatedInstanceList")
def _related_instances(store: MasterStore, p: Params, _: Request) -> Response:
    """Accepted and ignored, as on the production master; the partition must exist."""
    references = p.marshalled("instance_reference_xml", [])
    if not isinstance(references, list):
        raise BadRequest("instance_reference_xml must be a list")
    store.check_partition(p["computer_id"], p["computer_partition_id"])
    return _text("OK")


def _requester(request: Request, p: Params) -> tuple[str, str] | None:
    """Who requests: the X-SlapPartition header first, then the form fields, else a user."""
    header = request.headers.get("authorization", "")
    scheme, _, rest = header.partition(" ")
    if scheme.lower() == "x-slappartition":
        pairs = dict(item.partition("=")[::2] for item in rest.split(","))
        fields = {key.strip(): value.strip() for key, value in pairs.items()}
        if not fields.get("computer_id") or not fields.get("computer_partition_id"):
            raise BadRequest("X-SlapPartition header without computer_id or computer_partition_id")
        return fields["computer_id"], fields["computer_partition_id"]
    computer, partition = p.get("computer_id"), p.get("computer_partition_id")
    return (computer, partition) if computer and partition else None


@_endpoint("POST", "requestComputerPartition")
def _request(store: MasterStore, p: Params, request: Request) -> Response:
    state = p.marshalled("state", None)
    shared = p.marshalled("shared_xml", False)
    if not isinstance(shared, bool):
        raise BadRequest("shared_xml must be a marshalled boolean")
    if state is not None and not isinstance(state, str):
        raise BadRequest("state must be a marshalled string or None")
    answer = store.request(
        InstanceRequest(
            software_release=p["software_release"],
            title=p["partition_reference"],
            software_type=p.get("software_type") or DEFAULT_SOFTWARE_TYPE,
            parameters=p.marshalled("partition_parameter_xml", {}),
            filter=p.marshalled("filter_xml", {}),
            state=state,
            shared=shared,
            requester=_requester(request, p),
        )
    )
    return _xml(SoftwareInstance(answer).to_wire())


# --- computer-level writes -----------------------------------------------------------------


@_endpoint("POST", "supplySupply")
def _supply(store: MasterStore, p: Params, _: Request) -> Response:
    store.supply(p["computer_id"], p["url"], p.get("state") or "available")
    return _text("OK")


@_endpoint("POST", "useComputer")
def _use_computer(store: MasterStore, p: Params, _: Request) -> Response:
    store.use_computer(p["computer_id"], p["use_string"])
    return _text("OK")


@_endpoint("POST", "computerBang")
def _computer_bang(store: MasterStore, p: Params, _: Request) -> Response:
    store.computer_bang(p["computer_id"], p.get("message") or "")
    return _text("OK")


@_endpoint("POST", "loadComputerConfigurationFromXML")
def _load_configuration(store: MasterStore, p: Params, _: Request) -> Response:
    definition = p.marshalled("xml", None)
    if definition is None:
        raise BadRequest("missing parameter 'xml'")
    store.load_computer_configuration(definition)
    return _text("OK")


# --- the application -----------------------------------------------------------------------


class _Feed:
    """Per-computer events set when a generation moves, for long polls (loop thread only)."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def event(self, computer: str) -> asyncio.Event:
        event = self._events.get(computer)
        if event is None:
            event = self._events[computer] = asyncio.Event()
        return event

    def wake(self, computers: list[str]) -> None:
        for computer in computers:
            event = self._events.pop(computer, None)
            if event is not None:
                event.set()


class MasterApp:
    """Routes, the getFullComputerInformation cache and the change feed around a store.

    After a commit, long polls of the changed computers wake up and their documents are
    re-rendered in the background (bursts of writes coalesce), so polling nodes keep hitting
    the cache; at start-up every computer's document is rendered the same way.
    """

    def __init__(self, store: MasterStore) -> None:
        self.store = store
        self.feed = _Feed()
        self.last_contact: dict[str, int] = {}
        self._documents: dict[str, tuple[int, bytes]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        store.add_listener(self._committed)

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        self._loop = asyncio.get_running_loop()
        self._schedule(await run_in_threadpool(self.store.computer_ids))
        yield
        for task in self._tasks:
            task.cancel()

    def _committed(self, changed: dict[str, int]) -> None:
        """Called from whichever thread committed: hand over to the loop."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._changed, list(changed))

    def _changed(self, computers: list[str]) -> None:
        self.feed.wake(computers)
        self._schedule(computers)

    def _schedule(self, computers: list[str]) -> None:
        fresh = [computer for computer in computers if computer not in self._pending]
        if fresh and self._loop is not None:
            self._pending.update(fresh)
            self._loop.call_later(REFRESH_DELAY, self._refresh, fresh)

    def _refresh(self, computers: list[str]) -> None:
        for computer in computers:
            self._pending.discard(computer)
            task = asyncio.ensure_future(self._render_quietly(computer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _render_quietly(self, computer: str) -> None:
        try:
            await self.computer_document(computer)
        except MasterError:
            pass  # gone meanwhile: the next poll gets the error
        except Exception:
            log.exception("rendering the document of computer %s failed", computer)

    async def _generation(self, computer: str) -> int:
        known = self.store.known_generation(computer)
        if known is not None:
            return known
        return await run_in_threadpool(self.store.generation, computer)

    def _render(self, computer: str) -> tuple[int, bytes]:
        generation, document = self.store.computer_document(computer)
        return generation, marshal.dumps(document.to_wire())

    async def computer_document(self, computer: str) -> tuple[int, bytes]:
        """The marshalled document, rebuilt once per generation however many ask."""
        cached = self._documents.get(computer)
        if cached is not None and cached[0] == await self._generation(computer):
            return cached
        lock = self._locks.setdefault(computer, asyncio.Lock())
        async with lock:
            cached = self._documents.get(computer)
            if cached is None or cached[0] != await self._generation(computer):
                cached = await run_in_threadpool(self._render, computer)
                self._documents[computer] = cached
        return cached

    async def full_computer_information(self, request: Request) -> Response:
        async def answer(p: Params) -> Response:
            computer = p["computer_id"]
            generation, body = await self.computer_document(computer)
            self.last_contact[computer] = now_us()
            etag = f'"{generation}"'
            if etag in _etags(request.headers.get("if-none-match", "")):
                return Response(status_code=304, headers={"ETag": etag})
            return Response(body, media_type=XML, headers={"ETag": etag})

        return await self._guard(request, answer)

    async def computer_status(self, request: Request) -> Response:
        async def answer(p: Params) -> Response:
            computer = p["computer_id"]
            status = await run_in_threadpool(
                self.store.computer_status, computer, self.last_contact.get(computer)
            )
            return _xml(status)

        return await self._guard(request, answer)

    async def changes(self, request: Request) -> Response:
        """Long poll: answer as soon as the generation differs from `since`."""

        async def answer(p: Params) -> Response:
            computer = p["computer_id"]
            try:
                since = int(p.get("since") or -1)
                timeout = min(max(float(p.get("timeout") or 30), 0.0), MAX_POLL_SECONDS)
            except ValueError:
                raise BadRequest("since must be an integer and timeout a number") from None
            self._loop = asyncio.get_running_loop()
            event = self.feed.event(computer)  # before reading, so no change slips between
            generation = await self._generation(computer)
            if generation == since:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout)
                generation = await self._generation(computer)
            return JSONResponse({"generation": generation})

        return await self._guard(request, answer)

    def _wrap(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            async def answer(p: Params) -> Response:
                return await run_in_threadpool(handler, self.store, p, request)

            return await self._guard(request, answer)

        return endpoint

    async def _guard(
        self, request: Request, answer: Callable[[Params], Awaitable[Response]]
    ) -> Response:
        """Read the parameters, run the handler, turn every failure into a status and a reason."""
        try:
            if request.method == "POST":
                declared = request.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
                    raise MasterError(f"body larger than {MAX_BODY_BYTES} bytes")
                p = Params(await request.form(), none_is_absent=True)
            else:
                p = Params(request.query_params, none_is_absent=False)
            return await answer(p)
        except MasterError as exc:
            return _error(request, exc.status, str(exc))
        except HTTPException as exc:  # e.g. a form body that does not parse
            return _error(request, exc.status_code, str(exc.detail))
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            return _error(request, 500, "internal error")

    def routes(self) -> list[Route]:
        routes = [
            Route("/getFullComputerInformation", self.full_computer_information, methods=["GET"]),
            Route("/getComputerInformation", self.full_computer_information, methods=["GET"]),
            Route("/getComputerStatus", self.computer_status, methods=["GET"]),
            Route(CHANGES_PATH, self.changes, methods=["GET"]),
        ]
        for method, name, handler in _ENDPOINTS:
            routes.append(Route(f"/{name}", self._wrap(handler), methods=[method]))
        return routes


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def _error(request: Request, status: int, message: str) -> Response:
    """An error answer; its reason goes into the request's access log line."""
    request.state.error = message
    return _text(message, status)


class AccessLog:
    """One log line per request: client, method, path, status, duration (and why it failed).

    Successes are logged at INFO, errors at WARNING, so every error leaves a line.
    """

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
                reason = scope.get("state", {}).get("error")
                access_log.log(
                    level,
                    "%s %s %s %d %.1fms%s",
                    client[0],
                    scope["method"],
                    scope["path"],
                    status,
                    (time.perf_counter() - start) * 1000,
                    f" {reason}" if reason else "",
                )


def create_app(store: MasterStore) -> Starlette:
    """The ASGI application serving `store`."""
    master = MasterApp(store)
    app = Starlette(routes=master.routes(), lifespan=master.lifespan)
    app.state.master = master
    app.add_middleware(AccessLog)
    return app
