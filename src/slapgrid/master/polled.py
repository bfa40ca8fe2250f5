"""The two endpoints nodes poll, answered on the event loop: the computer document and the feed.

getFullComputerInformation comes from the document cache with an `ETag` honoured through
`If-None-Match`, and counts as the computer's contact with the master; our own agent
long-polls the change feed to react as soon as a computer's generation moves.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from slapgrid.master.endpoints import XML
from slapgrid.master.errors import BadRequest
from slapgrid.master.params import Params
from slapgrid.master.stamps import now_us
from slapgrid.master.state import MasterState
from slapgrid.slap import changes


async def full_computer_information(master: MasterState, p: Params, request: Request) -> Response:
    computer = p["computer_id"]
    document = await master.documents.get(computer)
    if master.store.note_contact(computer, now_us()):
        master.write_contacts_soon()
    headers = {"ETag": document.etag}
    if document.matches(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    return Response(document.body, media_type=XML, headers=headers)


async def change_feed(master: MasterState, p: Params, _: Request) -> Response:
    """Long poll: answer as soon as the generation differs from `since`."""
    computer = p["computer_id"]
    try:
        since, timeout = changes.parse_poll(p.get("since"), p.get("timeout"))
    except ValueError:
        raise BadRequest("since must be an integer and timeout a number") from None
    generation = await master.feed.wait(computer, since, timeout)
    return Response(changes.encode_generation(generation), media_type=changes.MEDIA_TYPE)
