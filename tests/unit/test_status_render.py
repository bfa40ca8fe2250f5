"""`slapgrid status` for people: fits 80 columns, shows text verbatim, says times in words."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from slapgrid.cli.render import status
from slapgrid.node.status import NodeStatus, PartitionStatus, SoftwareStatus, human_age

LONG_URL = "https://lab.example.com/nexedi/slapos/raw/1.0.356/software/erp5/" + "x" * 60 + ".cfg"


def rendered(node: NodeStatus, width: int = 80) -> list[str]:
    out = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
    status(node, as_json=False, out=out)
    return out.file.getvalue().splitlines()  # type: ignore[attr-defined]


def node_status() -> NodeStatus:
    now = time.time()
    return NodeStatus(
        software=[SoftwareStatus("a" * 32, LONG_URL, False, "[buildout] error: no such file")],
        partitions=[
            PartitionStatus(
                "slappart0",
                "deploy",
                "1710000000",
                title="[main] web",
                software_release=LONG_URL,
                deployed_at=now - 200,
                processes=["web-on-watch RUNNING"],
                promises=["check-web ok (3 min old)"],
                last_error="While: Installing [section] in /srv/slapgrid/" + "p" * 70,
            )
        ],
        runs={"instance": {"at": now - 3 * 3600, "exit_code": 0, "duration": 12.5, "done": []}},
        supervisord="RUNNING",
        daemon={"alive": False, "pid": 42, "updated_at": now - 2 * 86400},
    )


def test_no_line_is_wider_than_the_terminal() -> None:
    lines = rendered(node_status())
    assert lines and max(len(line) for line in lines) <= 80


def test_text_from_logs_and_masters_is_shown_verbatim() -> None:
    text = "".join(line.strip("│┃ ") for line in rendered(node_status(), width=400))
    for verbatim in ("[buildout] error: no such file", "[main] web", "Installing [section]"):
        assert verbatim in text


def test_each_partition_says_its_instance_and_software_release() -> None:
    lines = rendered(node_status(), width=400)
    row = next(line for line in lines if "slappart0" in line)
    assert LONG_URL in row and "web-on-watch RUNNING" in row
    assert any("[main] web" in line for line in lines)


def test_times_are_ages_in_words() -> None:
    text = "\n".join(rendered(node_status(), width=400))
    assert "3 min ago" in text
    assert "last instance run: 3 h ago, exit code 0, took 12 s" in text
    assert "not running since 2 d ago" in text
    assert "1710000000" not in text


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(0, "0 s"), (59.4, "59 s"), (60, "1 min"), (3599, "59 min"), (7200, "2 h"), (86400, "1 d")],
)
def test_human_age(seconds: float, words: str) -> None:
    assert human_age(seconds) == words
