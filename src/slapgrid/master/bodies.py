"""Reading a request's body into memory, bounded in size and in time.

The same bounds hold whether the length is declared or the body comes in chunks, so a
client can neither make the master hold more than `limit` bytes nor hold a slot by
sending a byte at a time. (A binary cache upload is streamed to disk instead.)
"""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request

from slapgrid.master.errors import BadRequest, TimedOut, TooLarge


def declared_length(request: Request, limit: int) -> int | None:
    """The declared Content-Length; refused if not a number or above `limit`."""
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    if not declared.isdigit():
        raise BadRequest("Content-Length is not a number")
    if int(declared) > limit:
        raise TooLarge(f"body larger than {limit} bytes")
    return int(declared)


async def bounded_body(request: Request, limit: int, timeout: float) -> bytes:
    """The whole body, at most `limit` bytes, received within `timeout` seconds."""
    declared_length(request, limit)
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"body larger than {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise TimedOut(f"body not received within {timeout:g} s") from None
    except ClientDisconnect:
        raise BadRequest("body interrupted: the client disconnected") from None
    return b"".join(chunks)
