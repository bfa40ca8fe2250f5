"""The SLAP calls answered straight from the store: one blocking function per endpoint.

Each takes the serving state, the call's parameters and the request, and returns the answer;
`routes` says which URL and method reach which, and the app runs them off the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from slapgrid.master import access, credentials, hateoas
from slapgrid.master.errors import BadRequest, NotFound
from slapgrid.master.inputs import InstanceRequest
from slapgrid.master.params import Params
from slapgrid.master.state import MasterState
from slapgrid.master.tables import DEFAULT_SOFTWARE_TYPE
from slapgrid.slap import marshal, xml_text
from slapgrid.slap.documents import SoftwareInstance

XML = "text/xml; charset=utf-8"
TEXT = "text/plain; charset=utf-8"

Endpoint = Callable[[MasterState, Params, Request], Response]


def xml(value: Any) -> Response:
    return Response(marshal.dumps(value), media_type=XML)


def text(body: str, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type=TEXT)


# --- reads ---------------------------------------------------------------------------------


def register_partition(master: MasterState, p: Params, _: Request) -> Response:
    computer, partition = p["computer_reference"], p["computer_partition_reference"]
    return xml(master.store.partition_document(computer, partition).to_wire())


def certificate(master: MasterState, p: Params, _: Request) -> Response:
    """The partition's key and certificate, issued once per instance it holds."""
    computer, partition = p["computer_id"], p["computer_partition_id"]
    if master.authority is None:
        return xml(master.store.partition_certificate(computer, partition))
    return xml(
        credentials.partition_certificate(master.store, master.authority, computer, partition)
    )


def register_computer(master: MasterState, p: Params, request: Request) -> Response:
    """A one-time token (header `X-Access-Token`, as the reference's `node register` sends)
    traded for the computer's certificate: for the key of `certificate_request` (a CSR, what
    `slapgrid register` sends), else with a key made here (the reference's flow)."""
    if master.authority is None:
        raise NotFound("this master issues no certificates")
    request_pem = p.get("certificate_request")
    issued = credentials.redeem_token(
        master.store,
        master.authority,
        request.headers.get("x-access-token", ""),
        p["title"],
        request_pem.encode() if request_pem else None,
    )
    return JSONResponse(
        {
            "certificate": issued.certificate.decode(),
            "key": issued.key.decode(),
            "ca": issued.ca.decode(),
        }
    )


def partition_status(master: MasterState, p: Params, _: Request) -> Response:
    return xml(master.store.partition_status(p["computer_id"], p["computer_partition_id"]))


def software_status(master: MasterState, p: Params, _: Request) -> Response:
    return xml(master.store.software_status(p["computer_id"], p["url"]))


def computer_status(master: MasterState, p: Params, _: Request) -> Response:
    return xml(master.store.computer_status(p["computer_id"]))


def hosting_ip_list(master: MasterState, p: Params, _: Request) -> Response:
    return xml(master.store.hosting_ip_list(p["computer_id"], p["computer_partition_id"]))


def hateoas_url(master: MasterState, p: Params, request: Request) -> Response:
    """Where the reference client's navigator starts (`slapos service list`/`info`)."""
    return text(str(request.base_url).rstrip("/") + "/" + hateoas.PATH)


def hateoas_navigation(master: MasterState, p: Params, request: Request) -> Response:
    """The root document, an instance-tree search, or one tree's view (`mode`)."""
    mode = p.get("mode")
    if mode is None:
        return JSONResponse(hateoas.root_document(str(request.base_url)))
    if mode == "search":
        title = hateoas.searched_title(p["query"])
        owner = _owner(request)
        if title is None:
            return JSONResponse(hateoas.search_result(master.store.instance_trees(owner)))
        try:
            found = [master.store.instance_tree(title, owner)]
        except NotFound:
            found = []
        return JSONResponse(hateoas.search_result(found))
    if mode == "traverse":
        title = hateoas.traversed_title(p["relative_url"])
        tree = master.store.instance_tree(title, _owner(request))
        return JSONResponse(hateoas.tree_view(tree))
    raise BadRequest(f"unhandled mode: {mode}")


async def instance_tree_list(master: MasterState, p: Params, request: Request) -> Response:
    """The user's instance trees, each with its parameters (the reference lists titles)."""
    trees = await master.run_blocking(master.store.instance_trees, _owner(request))
    return JSONResponse({"result_list": trees})


async def instance_tree(master: MasterState, p: Params, request: Request) -> Response:
    title = p.document.get("title")
    if not isinstance(title, str):
        raise BadRequest('the body must name the instance tree: {"title": …}')
    if not xml_text.is_xml_text(title):  # as SLAP calls' parameters (PostgreSQL keeps no NUL)
        raise BadRequest("the title holds characters XML cannot carry")
    found = await master.run_blocking(master.store.instance_tree, title, _owner(request))
    return JSONResponse(found)


def _owner(request: Request) -> str | None:
    """Whose instance trees the caller sees: its own (a user), or all (trusted)."""
    return access.caller_of(request).owner


# --- what nodes report ---------------------------------------------------------------------


def software_report(event: str) -> Endpoint:
    """building / available / destroyed / error of a software release."""

    def report(master: MasterState, p: Params, _: Request) -> Response:
        error_log = p.get("error_log") or ""
        master.store.report_software(p["computer_id"], p["url"], event, error_log)
        return text("OK")

    return report


def partition_report(event: str) -> Endpoint:
    """started / stopped / error of an instance, or error of a shared one."""

    def report(master: MasterState, p: Params, _: Request) -> Response:
        master.store.report_partition(
            p["computer_id"],
            p["computer_partition_id"],
            event,
            p.get("error_log") or "",
            p.slave_reference(),
        )
        return text("OK")

    return report


def destroyed(master: MasterState, p: Params, _: Request) -> Response:
    return text(master.store.destroyed_partition(p["computer_id"], p["computer_partition_id"]))


def bang(master: MasterState, p: Params, _: Request) -> Response:
    master.store.bang(p["computer_id"], p["computer_partition_id"], p.get("message") or "")
    return text("OK")


def rename(master: MasterState, p: Params, _: Request) -> Response:
    computer, partition = p["computer_id"], p["computer_partition_id"]
    master.store.rename(computer, partition, p["new_name"], p.slave_reference())
    return text("OK")


def set_connection(master: MasterState, p: Params, _: Request) -> Response:
    parameters = p.marshalled("connection_xml", None)
    if parameters is None:
        raise BadRequest("missing parameter 'connection_xml'")
    computer, partition = p["computer_id"], p["computer_partition_id"]
    master.store.set_connection(computer, partition, parameters, p.slave_reference())
    return text("OK")


def related_instances(master: MasterState, p: Params, _: Request) -> Response:
    """Accepted and ignored, as on the production master; the partition must exist."""
    references = p.marshalled("instance_reference_xml", [])
    if not isinstance(references, list):
        raise BadRequest("instance_reference_xml must be a list")
    master.store.check_partition(p["computer_id"], p["computer_partition_id"])
    return text("OK")


def request_instance(master: MasterState, p: Params, request: Request) -> Response:
    """A user's root instance, or a partition's child (its own tree, from its certificate)."""
    caller = access.caller_of(request)
    state = p.marshalled("state", None)
    shared = p.marshalled("shared_xml", False)
    if not isinstance(shared, bool):
        raise BadRequest("shared_xml must be a marshalled boolean")
    if state is not None and not isinstance(state, str):
        raise BadRequest("state must be a marshalled string or None")
    answer = master.store.request(
        InstanceRequest(
            software_release=p["software_release"],
            title=p["partition_reference"],
            software_type=p.get("software_type") or DEFAULT_SOFTWARE_TYPE,
            parameters=p.marshalled("partition_parameter_xml", {}),
            filter=p.marshalled("filter_xml", {}),
            state=state,
            shared=shared,
            requester=caller.requester(p, request.headers.get("authorization", "")),
            owner=caller.owner,
        )
    )
    return xml(SoftwareInstance(answer).to_wire())


# --- computer-level writes -----------------------------------------------------------------


def supply(master: MasterState, p: Params, _: Request) -> Response:
    master.store.supply(p["computer_id"], p["url"], p.get("state") or "available")
    return text("OK")


def use_computer(master: MasterState, p: Params, _: Request) -> Response:
    master.store.use_computer(p["computer_id"], p["use_string"])
    return text("OK")


def computer_bang(master: MasterState, p: Params, _: Request) -> Response:
    master.store.computer_bang(p["computer_id"], p.get("message") or "")
    return text("OK")


def load_configuration(master: MasterState, p: Params, _: Request) -> Response:
    definition = p.marshalled("xml", None)
    if definition is None:
        raise BadRequest("missing parameter 'xml'")
    master.store.load_computer_configuration(definition)
    return text("OK")
