"""The instance trees users read back (`slapgrid show`): roots only, with their parameters,
in the reference proxy's jIO shape."""

from __future__ import annotations

import pytest

from master_site import COMP, SR_A, request
from slapgrid.master.storage import MasterStore, NotFound


def test_only_roots_are_listed_each_with_its_document(tree: MasterStore) -> None:
    request(tree, "site", shared=True, parameters={"domain": "example.com"})
    listed = tree.instance_trees()
    assert [item["title"] for item in listed] == ["root", "other", "site"]
    root = listed[0]
    assert root == tree.instance_tree("root")
    assert root["parameters"] == {"a": "1"}
    assert (root["software_release_uri"], root["software_type"]) == (SR_A, "default")
    assert (root["computer_guid"], root["compute_partition_id"]) == (COMP, "slappart0")
    assert (root["state"], root["shared"], root["root_instance_title"]) == (
        "started",
        False,
        "root",
    )
    site = tree.instance_tree("site")
    assert site["shared"] is True and site["parameters"] == {"domain": "example.com"}
    assert site["compute_partition_id"]  # hosted by a partition of the same release


def test_children_and_unknown_titles_are_not_trees(tree: MasterStore) -> None:
    for title in ("child", "front", "nope"):
        with pytest.raises(NotFound, match="no instance tree"):
            tree.instance_tree(title)


def test_a_destroyed_root_is_listed_until_its_node_destroys_it(tree: MasterStore) -> None:
    request(tree, "other", state="destroyed")
    assert tree.instance_tree("other")["state"] == "destroyed"
