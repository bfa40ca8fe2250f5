"""`slapgrid format` checks: the saved description, the partition directories and the tools
the steps need."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from slapgrid.node.format.previous import load_previous
from slapgrid.node.format.steps import EnsureDirectory, FormatError, Step, missing_tools
from slapgrid.node.instance.partition import check_partition
from support.format_configs import IR


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read"),
        ('{"partition_list": {}}', "invalid partition_list"),
        ('{"partition_list": [{"reference": "a"}, {"reference": "a"}]}', "invalid"),
        ('{"partition_list": [{"path": "/x"}]}', "invalid"),
        ('{"partition_list": [{"reference": "../etc"}]}', "invalid"),
        ('{"partition_list": [{"reference": "slappart0\\n"}]}', "invalid"),
    ],
)
def test_corrupt_saved_description_is_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "computer.json"
    path.write_text(content)
    with pytest.raises(FormatError, match=message):
        load_previous(path)


def test_missing_saved_description_means_fresh(tmp_path: Path) -> None:
    assert load_previous(tmp_path / "computer.json") is None


def test_check_partition(tmp_path: Path) -> None:
    uid = os.geteuid()
    partition = tmp_path / "slappart0"
    assert check_partition(partition, uid) == [
        f"partition directory {partition} does not exist (run `slapgrid format`)"
    ]
    partition.write_text("")
    assert check_partition(partition, uid) == [f"{partition} is not a directory"]
    partition.unlink()
    partition.mkdir(mode=0o700)
    partition.chmod(0o755)
    assert check_partition(partition, uid) == [f"{partition} has mode 0755, expected 0750"]
    partition.chmod(0o750)
    assert check_partition(partition, uid) == []
    assert check_partition(partition, None) == []
    problems = check_partition(partition, uid + 4242)
    assert len(problems) == 1
    assert problems[0].startswith(f"{partition} belongs to ")
    assert f"expected uid {uid + 4242}" in problems[0]


def test_missing_tools_are_listed() -> None:
    class Exotic(Step):
        tools = ("slapgrid-no-such-tool", "sh")

    assert missing_tools([Exotic(), EnsureDirectory(IR, 0o755)]) == ["slapgrid-no-such-tool"]
