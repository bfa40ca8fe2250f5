"""Which directories `slapgrid report` may wipe: a pure decision over what the disk shows."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

from nodes import formatted_partition
from slapgrid.node import layout
from slapgrid.node.planner import Kind
from slapgrid.node.report.plan import destruction_actions, partition_problem
from slapgrid.slap.documents import Computer, ComputerPartition, SoftwareRelease

SR = SoftwareRelease("http://example.invalid/software.cfg", "C")


def test_a_directory_that_is_not_a_partition_is_refused_with_its_reason() -> None:
    partitions = [
        ComputerPartition("C", "slappart0", "destroyed", SR),
        ComputerPartition("C", "etc", "destroyed", SR),
        ComputerPartition("C", "var", "started", SR),  # not destroyed: not report's decision
        ComputerPartition("C", "slappart3", "destroyed", SR),  # no directory here
        ComputerPartition("C", "slappart4", "destroyed", None),  # free
    ]
    problems = {"slappart0": None, "etc": "no marker", "var": "no marker", "slappart4": None}
    actions = destruction_actions(Computer("C", partitions), problems)
    assert [(a.kind, a.target, a.reason) for a in actions] == [
        (Kind.DESTROY, "slappart0", "requested destroyed"),
        (Kind.ERROR, "etc", "refusing to destroy: no marker"),
    ]


def test_a_partition_is_format_s_marker_and_deploy_s_checks(tmp_path: Path) -> None:
    good = formatted_partition(tmp_path / "good")
    assert partition_problem(good) is None

    (tmp_path / "etc").mkdir(mode=0o750)
    assert f"no {layout.RESOURCE_FILE}" in str(partition_problem(tmp_path / "etc"))

    (tmp_path / "linked").symlink_to(good)
    assert "is a symbolic link" in str(partition_problem(tmp_path / "linked"))

    loose = formatted_partition(tmp_path / "loose")
    loose.chmod(0o755)
    assert "has mode 0755, expected 0750" in str(partition_problem(loose))

    garbled = formatted_partition(tmp_path / "garbled")
    (garbled / layout.RESOURCE_FILE).write_text("{not json")
    assert "names no known owner" in str(partition_problem(garbled))


def test_the_owner_is_the_user_the_marker_names(tmp_path: Path) -> None:
    partition = formatted_partition(tmp_path / "slappart0")
    marker = partition / layout.RESOURCE_FILE
    other = next(user for user in pwd.getpwall() if user.pw_uid != os.geteuid())
    marker.write_text(json.dumps({"user": {"name": other.pw_name}}))
    assert f"expected {other.pw_name} (uid {other.pw_uid})" in str(partition_problem(partition))
    marker.write_text(json.dumps({"user": {"name": str(os.geteuid())}}))  # no passwd entry
    assert partition_problem(partition) is None
