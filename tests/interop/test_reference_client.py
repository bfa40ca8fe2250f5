"""The reference client library (slapos.slap 1.26.1) against our master and `slapos proxy`.

The same scenario (format, supply, request, getFullComputerInformation,
registerComputerPartition, parameters, setConnectionDict, a child and a shared instance) runs
against both; what the client sees must be the same, except for these deliberate differences:

* `timestamp`: ours an integer (µs), the proxy's a string holding a float;
* instance guids: ours `SOFTINST-…`/`SHARED-…`, the proxy's `<computer>-<partition>`;
* shared instances in `slave_instance_list`: ours `slave_reference` is the shared instance's
  guid and `slave_title` its title (as on the production master), the proxy uses
  `<root title>_<title>` for both; ours also carry a `timestamp`;
* routed addresses: ours `full_ip_list` (master), the proxy's `full_address_list`.

Our master serves HTTPS: the reference client presents the certificates our master issued
(`slapgrid master computer add` / `user add`), a computer's for the node's calls and a
user's for supply and request; the proxy is plain HTTP, where both are anonymous.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from master_site import small_computer
from slapgrid.cli.user_cmds import show_command
from support.tls import TlsMaster, tls_master

pytestmark = pytest.mark.interop

SCENARIO = Path(__file__).with_name("reference_scenario.py")
DIFFERENT_KEYS = {"timestamp", "full_ip_list", "full_address_list"}
DIFFERENT_SLAVE_KEYS = {"slave_reference", "slave_title", "timestamp"}
SR = "https://example.com/software/web/software.cfg"


def run_scenario(python: Path, url: str, computer: str, *files: Path) -> dict[str, Any]:
    """`files`: the computer's key and certificate, then the user's (none on plain HTTP)."""
    result = subprocess.run(
        [str(python), str(SCENARIO), url, computer, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def run_scenario_on(python: Path, master: TlsMaster) -> dict[str, Any]:
    """The scenario against our TLS master, each call with the certificate it needs."""
    computer, user = master.computer, master.user
    files = (computer.key_file, computer.cert_file, user.key_file, user.cert_file)
    return run_scenario(python, master.url, master.computer_id, *files)


def normalise(value: Any) -> Any:
    """Drop what differs on purpose (see the module docstring), recursively."""
    if isinstance(value, dict):
        drop = DIFFERENT_SLAVE_KEYS if "slave_reference" in value else DIFFERENT_KEYS
        return {k: normalise(v) for k, v in value.items() if k not in drop}
    if isinstance(value, list):
        return [normalise(item) for item in value]
    return value


def busy(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in result["partitions"] if p["software_release"]]


def test_reference_client_sees_the_same_on_both_masters(
    reference_python: Path, reference_proxy: tuple[str, str], tmp_path: Path, database: str
) -> None:
    proxy_url, computer = reference_proxy
    theirs = run_scenario(reference_python, proxy_url, computer)
    with tls_master(tmp_path, computer, database=database) as master:
        assert master.url.startswith("https://")
        ours = run_scenario_on(reference_python, master)

    assert normalise(ours) == normalise(theirs)

    # what the scenario must have exercised, on both
    for result in (ours, theirs):
        assert result["root"]["parameters"]["s"] == "a&b<c>&lt;"
        assert result["child_again"]["connection"] == {"dsn": "pg"}
        assert result["shared_again"]["connection"] == {"site": "https://front"}
        assert result["shared"]["id"] == result["frontend"]["id"]
        assert [slave["url"] for slave in result["slaves"]] == ["http://x"]
        assert all(p["needs_no_refetch"] for p in busy(result))
        assert result["registered"]["needs_no_refetch"] is False  # lazily fetched, and worked

    # the deliberate differences
    assert all(isinstance(p["timestamp"], int) for p in busy(ours))
    assert all(isinstance(p["timestamp"], str) for p in busy(theirs))
    assert ours["root_after"]["timestamp"] > ours["registered"]["timestamp"]


def shown_by_slapgrid(
    url: str, monkeypatch: pytest.MonkeyPatch, *args: str, config: Path | None = None
) -> Any:
    """`slapgrid show --json`, with the user's configuration `config` when given."""
    monkeypatch.setenv("SLAPGRID_MASTER_URL", url)
    flags = ["--cfg", str(config)] if config else []
    result = CliRunner().invoke(show_command, [*args, *flags, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_slapgrid_show_reads_what_the_reference_client_requested(
    reference_python: Path,
    reference_proxy: tuple[str, str],
    tmp_path: Path,
    database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No local memory: `show` lists and reads instances another tool requested, on both."""
    (tmp_path / "client.cfg").write_text("[slapos]\n")
    monkeypatch.setenv("SLAPOS_CLIENT_CONFIGURATION", str(tmp_path / "client.cfg"))
    proxy_url, computer = reference_proxy
    run_scenario(reference_python, proxy_url, computer)
    theirs = shown_by_slapgrid(proxy_url, monkeypatch)
    with tls_master(tmp_path, computer, database=database) as master:
        run_scenario_on(reference_python, master)
        user = tmp_path / "user.cfg"
        user.write_text(f"[slapos]\n{master.user.console_lines()}")
        ours = shown_by_slapgrid(master.url, monkeypatch, config=user)
        web = shown_by_slapgrid(master.url, monkeypatch, "web", config=user)

    assert [item["name"] for item in theirs] == ["frontend", "web"]
    assert ours == theirs
    assert web == ours[1]
    assert web["parameters"] == {"n": "1", "s": "a&b<c>&lt;"}
    assert (web["computer"], web["state"]) == (computer, "started")


def reference_service(reference_venv: Path, config: Path, *args: str) -> Any:
    """`slapos service …` of the reference client; it prints one JSON document."""
    result = subprocess.run(
        [str(reference_venv / "bin" / "slapos"), "service", *args, "--cfg", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return json.loads(result.stdout[result.stdout.index("{") :])


def test_reference_service_list_and_info_read_our_master(
    reference_venv: Path, tmp_path: Path, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our HATEOAS subset: the reference client lists and shows what `slapgrid show` does."""
    (tmp_path / "client.cfg").write_text("[slapos]\n")
    monkeypatch.setenv("SLAPOS_CLIENT_CONFIGURATION", str(tmp_path / "client.cfg"))
    with tls_master(tmp_path, "COMP-OURS", database=database) as master:
        run_scenario_on(reference_venv / "bin" / "python", master)
        config = tmp_path / "reference-client.cfg"
        config.write_text(f"{master.user.console_lines()}[slapos]\nmaster_url = {master.url}\n")
        listed = reference_service(reference_venv, config, "list")
        info = reference_service(reference_venv, config, "info", "web")
        shown = shown_by_slapgrid(master.url, monkeypatch, config=config)
        ours = {item["name"]: item for item in shown}
    assert listed == {name: item["software_release"] for name, item in ours.items()}
    assert info["software-url"] == ours["web"]["software_release"]
    assert info["requested-state"] == ours["web"]["state"]
    assert info["instance-parameters"] == ours["web"]["parameters"]
    # of a json-in-xml connection the reference shows `_` alone, we merge it with the rest
    connection = ours["web"]["connection"]
    assert info["connection-parameters"] == {"k": [1, 2]} and connection["k"] == [1, 2]
    assert info["shared"] is False


def reference_command(reference_venv: Path, config: Path, *args: str) -> str:
    """A `slapos` user command of the reference (supply, request): its output."""
    result = subprocess.run(
        [str(reference_venv / "bin" / "slapos"), *args, "--cfg", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout + result.stderr


def test_reference_supply_and_request_present_a_users_certificate(
    reference_venv: Path, tmp_path: Path, database: str
) -> None:
    """`slapos supply|request` of 1.26.1 with `[slapconsole] key_file/cert_file`: over
    HTTPS, as the user our master issued the certificate to, who then sees the tree."""
    with tls_master(tmp_path, "COMP-CLI", database=database) as master:
        master.store.load_computer_configuration(small_computer("COMP-CLI", 1))
        config = tmp_path / "reference-client.cfg"
        config.write_text(f"{master.user.console_lines()}[slapos]\nmaster_url = {master.url}\n")
        reference_command(reference_venv, config, "supply", SR, "COMP-CLI")
        reference_command(reference_venv, config, "request", "web", SR, "--parameters", "n=1")
        snapshot = master.store.snapshot()
        with master.user_client() as user:
            trees = [tree["title"] for tree in user.instance_trees()]
        with master.node_client() as node:
            [busy] = [p for p in node.computer().partitions if p.software_release_url]
    assert [(s["url"], s["requested_state"]) for s in snapshot["software"]] == [(SR, "available")]
    assert trees == ["web"]
    assert busy.instance_title == "web" and busy.parameters and busy.parameters["n"] == "1"
