"""The HATEOAS subset for the reference client: only the queries it sends are understood."""

from __future__ import annotations

import pytest

from slapgrid.master import hateoas
from slapgrid.master.errors import BadRequest

LIST = 'portal_type:"Instance Tree" AND validation_state:validated'


def test_the_two_searches_of_slapos_service() -> None:
    assert hateoas.searched_title(LIST) is None
    assert hateoas.searched_title(LIST + ' AND title:="web 1"') == "web 1"


@pytest.mark.parametrize(
    "query",
    [
        LIST + ' AND title:="a" OR title:="b"',
        LIST + " AND title:=web",
        'portal_type:"Compute Node" AND validation_state:validated',
        "",
    ],
)
def test_any_other_query_is_refused(query: str) -> None:
    with pytest.raises(BadRequest, match="unhandled query"):
        hateoas.searched_title(query)


def test_the_view_holds_instance_xml_as_the_proxy_does() -> None:
    tree = {
        "title": "web",
        "state": "started",
        "parameters": {"a": "1", "empty": None},
        "connection_parameters": {},
        "software_release_uri": "https://sr/software.cfg",
        "software_type": "default",
        "shared": True,
    }
    view = hateoas.tree_view(tree)["_embedded"]["_view"]
    assert view["form_id"] == {
        "type": "StringField",
        "key": "form_id",
        "default": "InstanceTree_viewAsHateoas",
    }
    assert '<parameter id="a">1</parameter>' in view["my_text_content"]["default"]
    assert '<parameter id="empty"></parameter>' in view["my_text_content"]["default"]
    assert view["my_root_slave"] == {
        "type": "IntegerField",
        "key": "field_my_root_slave",
        "default": 1,
    }
    assert hateoas.traversed_title(hateoas.TREE + "web") == "web"
    with pytest.raises(BadRequest):
        hateoas.traversed_title("computers/COMP-1")
