"""The cache's HTTP endpoints, as slapos.libnetworkcache calls them.

- `POST shacache` with the file as body: stored under its SHA-512, answered 201 with that
  SHA-512 (the client checks it); `PUT shacache/<sha512>` the same, refused if the content
  is not that SHA-512's;
- `GET shacache/<sha512>`: the file (ranges allowed, as the client resumes with them), 404;
- `PUT shadir/<key>` with a JSON `[entry, signature]`: added to the key's list, 201;
- `GET shadir/<key>`: the JSON list of `[entry, signature]` pairs, 404 if none.

An upload is streamed to a temporary file and hashed as it comes, never held in memory,
bounded in size (`CacheStore.max_upload_bytes`) and in time: a pause of `IDLE_TIMEOUT`
drops it, and so does a rate below `MIN_RATE` on average.
"""

from __future__ import annotations

import asyncio

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, Response

from slapgrid.master.bodies import bounded_body, declared_length
from slapgrid.master.cache.store import MAX_ENTRY_BYTES, CacheStore, check_sha512
from slapgrid.master.endpoints import text
from slapgrid.master.errors import BadRequest, NotFound, TimedOut
from slapgrid.master.params import Params
from slapgrid.master.state import MasterState

IDLE_TIMEOUT = 30.0
"""Seconds an upload may pause."""
MIN_RATE = 256 << 10
"""Bytes per second an upload must average, after a first `IDLE_TIMEOUT`."""
WRITE_CHUNK = 1 << 20
"""Bytes received before they are hashed and written (in a worker thread)."""
JSON = "application/json"


def _cache(master: MasterState) -> CacheStore:
    if master.cache is None:
        raise NotFound("this master keeps no cache")
    return master.cache


async def upload_file(master: MasterState, p: Params, request: Request) -> Response:
    """A shacache upload, streamed to disk; answered with its SHA-512."""
    cache = _cache(master)
    expected = request.path_params.get("sha512")
    if expected is not None:
        check_sha512(expected)
    declared = declared_length(request, cache.max_upload_bytes)
    loop = asyncio.get_running_loop()
    expected_size = declared if declared is not None else cache.max_upload_bytes
    deadline = loop.time() + IDLE_TIMEOUT + expected_size / MIN_RATE
    with cache.receiving() as upload:
        pending: list[bytes] = []
        size = 0
        stream = request.stream().__aiter__()
        try:
            while True:
                timeout = min(IDLE_TIMEOUT, deadline - loop.time())
                if timeout <= 0:
                    raise TimedOut(f"upload slower than {MIN_RATE} bytes/s")
                try:
                    async with asyncio.timeout(timeout):
                        chunk = await anext(stream, None)
                except TimeoutError:
                    raise TimedOut("upload stalled or too slow") from None
                if chunk is not None:
                    pending.append(chunk)
                    size += len(chunk)
                if pending and (chunk is None or size >= WRITE_CHUNK):
                    await run_in_threadpool(upload.write, b"".join(pending))
                    pending.clear()
                    size = 0
                if chunk is None:
                    break
        except ClientDisconnect:
            raise BadRequest("upload interrupted") from None
        if declared is not None and upload.size != declared:
            raise BadRequest(f"received {upload.size} bytes of the {declared} declared")
        digest = await run_in_threadpool(upload.commit, expected)
    return text(digest, 201)


def download_file(master: MasterState, p: Params, request: Request) -> Response:
    path = _cache(master).file(request.path_params["sha512"])
    return FileResponse(path, media_type="application/octet-stream")


async def add_entry(master: MasterState, p: Params, request: Request) -> Response:
    """A shadir upload: one [entry, signature], its key in the path."""
    cache = _cache(master)
    body = await bounded_body(request, MAX_ENTRY_BYTES, IDLE_TIMEOUT)
    await run_in_threadpool(cache.add_entry, request.path_params["key"], body)
    return text("", 201)


def entries(master: MasterState, p: Params, request: Request) -> Response:
    body = _cache(master).entries(request.path_params["key"])
    return Response(body, media_type=JSON)
