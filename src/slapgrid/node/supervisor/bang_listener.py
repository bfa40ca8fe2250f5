"""supervisord event listener: tell the master when a partition's service dies.

Run by the node's supervisord as `python -m slapgrid.node.supervisor.bang_listener --master-url
… --computer-id … --instance-root … [--certificate-repository-path …]`. For every
PROCESS_STATE_EXITED or PROCESS_STATE_FATAL of a process named `*-on-watch` (an `etc/service`
program; its group is the partition id) it bangs the partition once per deployed timestamp: the
deployment's `P/.timestamp` is remembered in `P/.slapos_latest_bang_timestamp` after a
successful bang. The master answers a bang by bumping the partition, so the next run redeploys
it.

stdout belongs to the listener protocol; diagnostics go to stderr (supervisord's watchdog log).
Nothing an event or the master does may stop the listener: failures are logged and skipped.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from supervisor import childutils

from slapgrid.node import layout
from slapgrid.node.files import write_if_changed
from slapgrid.node.supervisor.conf import SERVICE_SUFFIX, WATCHDOG_EVENTS, check_name

log = logging.getLogger("slapgrid.watchdog")

BANG_TIMEOUT = 15.0


@dataclass(frozen=True)
class Settings:
    master_url: str
    computer_id: str
    instance_root: Path
    certificate_repository_path: Path | None = None


def parse_timestamp(text: str | None) -> int | None:
    """A deployment timestamp as an int; a float is truncated, anything else is None."""
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        try:
            return int(float(text.strip()))
        except (ValueError, OverflowError):
            return None


def is_watched(event: str, process_name: str) -> bool:
    """A service (not a run script) exited or failed; the exit status does not matter."""
    return event in WATCHDOG_EVENTS and process_name.endswith(SERVICE_SUFFIX)


def should_bang(event: str, process_name: str, deployed: int | None, last_bang: int | None) -> bool:
    """Pure decision: a watched service died in a deployment not banged about yet.

    `deployed` is the partition's `.timestamp` (None: never deployed, ignored), `last_bang`
    the timestamp recorded at the previous bang (None: never banged).
    """
    if not is_watched(event, process_name) or deployed is None:
        return False
    return last_bang is None or deployed > last_bang


def bang_message(process_name: str, pid: str) -> str:
    return f"{process_name} process in partition {pid} encountered a problem"


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None


def send_bang(settings: Settings, pid: str, message: str) -> None:
    """softwareInstanceBang with the partition's certificate (when a repository is set)."""
    from slapgrid.slap.client import SlapClient

    credentials = {}
    if settings.certificate_repository_path is not None:
        repository = settings.certificate_repository_path
        key, cert = layout.certificate_files(repository, pid)
        credentials = {"key_file": str(key), "cert_file": str(cert)}
    with SlapClient(
        settings.master_url, settings.computer_id, timeout=BANG_TIMEOUT, **credentials
    ) as client:
        client.bang(pid, message)


Banger = Callable[[Settings, str, str], None]


def handle_event(settings: Settings, event: str, payload: str, bang: Banger = send_bang) -> bool:
    """Bang if the event calls for it; True when a bang was sent. Never raises."""
    try:
        headers = childutils.get_headers(payload.split("\n", 1)[0])
        process_name, pid = headers.get("processname", ""), headers.get("groupname", "")
        if not is_watched(event, process_name):
            return False
        partition = settings.instance_root / check_name(pid, "partition id")
        deployed = parse_timestamp(_read(partition / layout.TIMESTAMP))
        last_bang = parse_timestamp(_read(partition / layout.BANG_MEMORY))
        if not should_bang(event, process_name, deployed, last_bang):
            log.info(
                "%s of %s:%s: no bang (deployed %s, last bang %s)",
                event,
                pid,
                process_name,
                deployed,
                last_bang,
            )
            return False
        message = bang_message(process_name, pid)
        bang(settings, pid, message)
        write_if_changed(partition / layout.BANG_MEMORY, str(deployed), 0o644)
        log.info("Banged partition %s: %s", pid, message)
        return True
    except Exception:
        log.exception("Cannot handle %s %r", event, payload)
        return False


def listen(settings: Settings, stdin: BinaryIO, stdout: TextIO, bang: Banger = send_bang) -> None:
    """The listener loop: READY, read one event, act, RESULT OK; until stdin closes.

    stdin is read as bytes because the header's `len` counts bytes.
    """
    while True:
        childutils.listener.ready(stdout)
        line = stdin.readline().decode("utf-8", "replace")
        if not line:
            return
        headers = childutils.get_headers(line)
        payload = stdin.read(int(headers.get("len", 0))).decode("utf-8", "replace")
        handle_event(settings, headers.get("eventname", ""), payload, bang)
        childutils.listener.ok(stdout)


def parse_args(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m slapgrid.node.supervisor.bang_listener")
    parser.add_argument("--master-url", required=True)
    parser.add_argument("--computer-id", required=True)
    parser.add_argument("--instance-root", required=True, type=Path)
    parser.add_argument("--certificate-repository-path", type=Path)
    args = parser.parse_args(argv)
    return Settings(
        args.master_url, args.computer_id, args.instance_root, args.certificate_repository_path
    )


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    listen(settings, sys.stdin.buffer, sys.stdout)


if __name__ == "__main__":
    main()
