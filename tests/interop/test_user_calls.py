"""`slapgrid supply|request` make the calls `slapos supply|remove|request` (1.26.1) make.

Each pair of commands runs against one recording server, each case on its own master URL
(`<server>/<case>/`); their requests must be the same: method, path, form fields in order,
byte for byte, and headers (`User-Agent` aside). (`slapgrid show` reads the master's
listing, a JSON call: test_reference_client compares it with the reference's.)
Left out: the reference's `getHateoasUrl`, and its fetch of the release's JSON schema
(`<url>.json`), which is not a SLAP call.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recording_server import Answer, Recorded, RecordingServer
from slapgrid.slap import marshal
from slapgrid.slap.marshal import SlapObject

pytestmark = pytest.mark.interop

NODE = "COMP-USER"
IGNORED_HEADERS = {"user-agent", "host"}

# case: (our arguments, the reference's arguments); `{sr}` is the release URL
CASES: dict[str, tuple[list[str], list[str]]] = {
    "supply": (["supply", "{sr}", NODE], ["supply", "{sr}", NODE]),
    "remove": (["supply", "--remove", "{sr}", NODE], ["remove", "{sr}", NODE]),
    "request": (["request", "web", "{sr}"], ["request", "web", "{sr}"]),
    "request_full": (
        [
            "request",
            "front é",
            "{sr}",
            "--type",
            "frontend",
            "-p",
            "zeta=1",
            "-p",
            "alpha=a&b <c>",
            "--node",
            "computer_guid=COMP-9",
            "--state",
            "stopped",
            "--shared",
        ],
        [
            "request",
            "front é",
            "{sr}",
            "--type",
            "frontend",
            "--parameters",
            "zeta=1",
            "alpha=a&b <c>",
            "--node",
            "computer_guid=COMP-9",
            "--state",
            "stopped",
            "--slave",
        ],
    ),
}


def _instance(_: Recorded) -> Answer:
    document = SlapObject(
        "SoftwareInstance",
        (),
        {
            "slap_computer_id": NODE,
            "slap_computer_partition_id": "slappart1",
            "_requested_state": "started",
            "_instance_guid": "SOFTINST-1",
            "_parameter_dict": {},
            "_connection_dict": {"url": "http://x"},
        },
    )
    return Answer(200, marshal.dumps(document))


def _call(request: Recorded) -> dict[str, Any]:
    return {
        "method": request.method,
        "path": request.path.split("/", 2)[2],
        "query": request.raw_query,
        "body": request.body.decode("ascii"),
        "headers": {k: v for k, v in request.headers.items() if k not in IGNORED_HEADERS},
    }


def _ours(url: str, args: list[str], home: Path) -> None:
    env = {**os.environ, "HOME": str(home), "XDG_STATE_HOME": str(home / "state")}
    env.pop("SLAPOS_CLIENT_CONFIGURATION", None)
    result = subprocess.run(
        [sys.executable, "-m", "slapgrid", *args, "--master-url", url],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _theirs(python: Path, url: str, args: list[str], home: Path) -> None:
    config = home / f"client-{abs(hash(url))}.cfg"
    config.write_text(f"[slapos]\nmaster_url = {url}\n")
    slapos = python.parent / "slapos"
    result = subprocess.run(
        [str(slapos), *args, "--cfg", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(home)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def recorded(
    reference_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, dict[str, list[dict[str, Any]]]]]:
    """Per side, per case: the SLAP calls made."""
    calls: dict[str, dict[str, list[dict[str, Any]]]] = {"ours": {}, "theirs": {}}
    with RecordingServer() as server:
        server.routes["requestComputerPartition"] = _instance
        server.routes["supplySupply"] = Answer(200, b"")
        sr = f"{server.url}sr/software.cfg"
        for side in calls:
            home = tmp_path_factory.mktemp(side)
            for name, (ours, theirs) in CASES.items():
                url = f"{server.url}{side}-{name}/"
                args = [arg.format(sr=sr) for arg in (ours if side == "ours" else theirs)]
                before = len(server.requests)
                if side == "ours":
                    _ours(url, args, home)
                else:
                    _theirs(reference_python, url, args, home)
                made = server.requests[before:]
                slap = [r for r in made if r.path.startswith(f"/{side}-{name}/")]
                calls[side][name] = [
                    _call(r) for r in slap if not r.path.endswith("/getHateoasUrl")
                ]
    yield calls


@pytest.mark.parametrize("name", list(CASES))
def test_user_commands_make_the_reference_calls(
    recorded: dict[str, dict[str, list[dict[str, Any]]]], name: str
) -> None:
    ours, theirs = recorded["ours"][name], recorded["theirs"][name]
    assert len(theirs) == 1
    assert ours == theirs
