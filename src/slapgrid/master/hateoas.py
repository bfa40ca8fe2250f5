"""HATEOAS for the reference client's `slapos service list` and `slapos service info`.

The reference client reads instance trees only through a HATEOAS navigator, which it finds
with `getHateoasUrl`. We answer the small part of it the reference proxy serves under
/hateoas: the root document, the two instance-tree searches and the instance-tree view,
built from the same documents as the jIO calls (`trees`). Pure functions: no I/O here.
"""

from __future__ import annotations

from typing import Any

from slapgrid.master.errors import BadRequest
from slapgrid.slap import instance_xml

PATH = "hateoas"
SERVICE_LIST = 'portal_type:"Instance Tree" AND validation_state:validated'
SERVICE_INFO = SERVICE_LIST + " AND title:="
TREE = "instance_tree/"  # relative_url of an instance tree: TREE + its title


def root_document(base_url: str) -> dict[str, Any]:
    """The links the navigator expands (RFC 6570 templates)."""
    root = base_url.rstrip("/") + "/" + PATH
    return {
        "_links": {
            "raw_search": {"href": root + "?mode=search&query={query}&select_list={select_list}"},
            "traverse": {"href": root + "?mode=traverse&relative_url={relative_url}&view={view}"},
        }
    }


def searched_title(query: str) -> str | None:
    """None for the whole list, the title for one tree; any other query is refused."""
    if query == SERVICE_LIST:
        return None
    quoted = query[len(SERVICE_INFO) :] if query.startswith(SERVICE_INFO) else ""
    if len(quoted) >= 2 and quoted[0] == quoted[-1] == '"' and '"' not in quoted[1:-1]:
        return quoted[1:-1]
    raise BadRequest(f"unhandled query: {query}")


def search_result(trees: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [
        {
            "title": tree["title"],
            "url_string": tree["software_release_uri"],
            "relative_url": TREE + tree["title"],
        }
        for tree in trees
    ]
    return {"_embedded": {"contents": rows}}


def traversed_title(relative_url: str) -> str:
    if not relative_url.startswith(TREE) or len(relative_url) == len(TREE):
        raise BadRequest(f"unknown relative_url {relative_url!r}")
    return relative_url[len(TREE) :]


def _xml(values: dict[str, Any]) -> str:
    return instance_xml.dumps({k: "" if v is None else v for k, v in values.items()})


def tree_view(tree: dict[str, Any]) -> dict[str, Any]:
    """An instance tree as the navigator's `slaposjs_view` form (the proxy's fields)."""
    fields = {
        "form_id": ("StringField", "InstanceTree_viewAsHateoas"),
        "my_reference": ("StringField", tree["title"]),
        "my_slap_state": ("StringField", tree["state"]),  # the requested state
        "my_text_content": ("StringField", _xml(tree["parameters"])),
        "my_connection_parameter_list": (
            "StringField",
            _xml(tree["connection_parameters"]),
        ),
        "my_url_string": ("StringField", tree["software_release_uri"]),
        "my_source_reference": ("StringField", tree["software_type"]),
        "my_root_slave": ("IntegerField", int(tree["shared"])),
    }
    view = {
        name: {"type": kind, "key": f"field_{name}", "default": value}
        for name, (kind, value) in fields.items()
    }
    view["form_id"]["key"] = "form_id"
    return {"_embedded": {"_view": view}, "_links": {"type": {"name": "Instance Tree"}}}
