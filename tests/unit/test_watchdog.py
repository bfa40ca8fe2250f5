"""The watchdog's bang decision, its memory file and its listener protocol."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from slapgrid.node.layout import BANG_MEMORY
from slapgrid.node.supervisor.bang_listener import (
    Settings,
    handle_event,
    listen,
    parse_args,
    parse_timestamp,
    should_bang,
)

EXITED, FATAL = "PROCESS_STATE_EXITED", "PROCESS_STATE_FATAL"


@pytest.mark.parametrize(
    ("event", "process", "deployed", "last_bang", "expected"),
    [
        (EXITED, "web-on-watch", 100, None, True),  # first death after a deployment
        (FATAL, "web-on-watch", 100, None, True),
        (EXITED, "web-on-watch", 100, 100, False),  # already banged for this deployment
        (EXITED, "web-on-watch", 200, 100, True),  # redeployed since the last bang
        (EXITED, "web-on-watch", 100, 200, False),
        (EXITED, "web-on-watch", None, None, False),  # never deployed: ignored
        (EXITED, "cron", 100, None, False),  # a run script, not a service
        (EXITED, "on-watch-cron", 100, None, False),
        ("PROCESS_STATE_STOPPED", "web-on-watch", 100, None, False),
        ("PROCESS_STATE_RUNNING", "web-on-watch", 100, None, False),
    ],
)
def test_should_bang(event, process, deployed, last_bang, expected) -> None:
    assert should_bang(event, process, deployed, last_bang) is expected


@pytest.mark.parametrize(
    ("text", "value"),
    [("1700000000", 1700000000), ("1700000000\n", 1700000000), ("12.7", 12), ("x", None)],
)
def test_parse_timestamp(text, value) -> None:
    assert parse_timestamp(text) == value
    assert parse_timestamp(None) is None


def payload(process: str, group: str) -> str:
    return f"processname:{process} groupname:{group} from_state:RUNNING expected:1 pid:42"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "slappart0").mkdir()
    return Settings("http://master", "COMP-1", tmp_path)


class Recorder:
    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.error = error

    def __call__(self, settings: Settings, pid: str, message: str) -> None:
        self.calls.append((pid, message))
        if self.error:
            raise self.error


def test_bangs_once_per_deployed_timestamp_and_remembers_it(settings: Settings) -> None:
    partition = settings.instance_root / "slappart0"
    (partition / ".timestamp").write_text("1700000000")
    bang = Recorder()
    event = payload("web-on-watch", "slappart0")

    assert handle_event(settings, EXITED, event, bang)
    assert bang.calls == [
        ("slappart0", "web-on-watch process in partition slappart0 encountered a problem")
    ]
    assert (partition / BANG_MEMORY).read_text() == "1700000000"
    assert not handle_event(settings, FATAL, event, bang)
    assert len(bang.calls) == 1

    (partition / ".timestamp").write_text("1700000100")
    assert handle_event(settings, EXITED, event, bang)
    assert (partition / BANG_MEMORY).read_text() == "1700000100"


def test_never_deployed_and_run_scripts_are_ignored(settings: Settings) -> None:
    bang = Recorder()
    assert not handle_event(settings, EXITED, payload("web-on-watch", "slappart0"), bang)
    (settings.instance_root / "slappart0" / ".timestamp").write_text("1")
    assert not handle_event(settings, EXITED, payload("cron", "slappart0"), bang)
    assert bang.calls == []
    assert not (settings.instance_root / "slappart0" / BANG_MEMORY).exists()


def test_failures_never_escape_and_leave_no_memory(settings: Settings) -> None:
    partition = settings.instance_root / "slappart0"
    (partition / ".timestamp").write_text("5")
    failing = Recorder(ConnectionError("master down"))
    assert not handle_event(settings, EXITED, payload("web-on-watch", "slappart0"), failing)
    assert not (partition / BANG_MEMORY).exists()  # the next death will try again
    assert not handle_event(settings, EXITED, "garbage", failing)
    assert not handle_event(settings, EXITED, payload("web-on-watch", "../etc"), failing)
    assert len(failing.calls) == 1


def test_listener_protocol(settings: Settings) -> None:
    (settings.instance_root / "slappart0" / ".timestamp").write_text("7")
    events = b""
    for name, body in ((EXITED, payload("web-on-watch", "slappart0")), ("TICK_5", "when:1")):
        data = body.encode()
        header = f"ver:3.0 server:supervisor pool:watchdog eventname:{name} len:{len(data)}\n"
        events += header.encode() + data
    out = io.StringIO()
    bang = Recorder()
    listen(settings, io.BytesIO(events), out, bang)
    assert out.getvalue() == "READY\nRESULT 2\nOKREADY\nRESULT 2\nOKREADY\n"
    assert [pid for pid, _ in bang.calls] == ["slappart0"]


def test_arguments() -> None:
    base = ["--master-url", "http://m", "--computer-id", "C", "--instance-root", "/srv/ir"]
    assert parse_args(base) == Settings("http://m", "C", Path("/srv/ir"), None)
    settings = parse_args([*base, "--certificate-repository-path", "/etc/certs"])
    assert settings.certificate_repository_path == Path("/etc/certs")
