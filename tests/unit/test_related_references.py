"""The instances a partition requested, read from its transaction file as the reference does."""

from __future__ import annotations

import pytest

from slapgrid.node.instance.steps.tell_master import related_references


@pytest.mark.parametrize(
    ("transaction", "references"),
    [
        ("", []),  # the empty file a buildout leaves when it requested nothing
        ("db\nfront\n", ["db", "front"]),
        ("db\n\nfront", ["db", "front"]),
        (" spaced title \n", [" spaced title "]),  # titles are sent as written
        ("tab\there\n", ["tab\there"]),
    ],
)
def test_references_are_the_lines_the_buildout_wrote(
    transaction: str, references: list[str]
) -> None:
    assert related_references(transaction) == references
