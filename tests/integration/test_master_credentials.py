"""Credentials end to end: the commands' files and lines, registration over HTTP against the
real master (one use, expiry, refusals that change nothing), partition certificates.
"""

from __future__ import annotations

import configparser
import datetime
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from master_site import small_computer, wait_ready
from slapgrid.cli.master_cmds import master_group
from slapgrid.cli.register_cmd import register_command
from slapgrid.cli.user_cmds import show_command
from slapgrid.master import credentials
from slapgrid.master.errors import Forbidden
from slapgrid.master.pki.authority import Authority
from slapgrid.master.pki.identity import Identity, identity_from_certificate
from slapgrid.master.server import MasterServer
from slapgrid.master.stamps import now_us
from slapgrid.master.storage import InstanceRequest, MasterStore
from slapgrid.node.instance.partition import write_certificate
from slapgrid.slap.client import SlapClient
from slapgrid.slap.errors import NotFoundError
from slapgrid.slap.registration import REGISTER_PATH
from slapgrid.user.client_config import load_client_config
from support.addresses import free_port
from support.tls import client_context, credential_files, https_client, node_client

pytestmark = pytest.mark.integration

COMP = "COMP-CRED"
SR = "https://example.com/software/web/software.cfg"


def run(command: object, *args: str | Path) -> Result:
    return CliRunner().invoke(command, [str(a) for a in args])  # type: ignore[arg-type]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def identity_in(directory: Path, ca_file: Path) -> Identity:
    ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    cert = (directory / "cert.pem").read_bytes()
    key = serialization.load_pem_private_key((directory / "key.pem").read_bytes(), None)
    parsed = x509.load_pem_x509_certificate(cert)
    assert parsed.public_key().public_numbers() == key.public_key().public_numbers()
    return identity_from_certificate(cert, ca)


def credential_rows(store: MasterStore) -> list[tuple[str, str | None, str | None]]:
    from sqlalchemy import select

    from slapgrid.master.tables import CredentialRow

    query = select(CredentialRow.kind, CredentialRow.computer, CredentialRow.user)
    return store.read_with(lambda session: sorted(tuple(row) for row in session.execute(query)))


def token_rows(store: MasterStore) -> list[tuple[str, int | None]]:
    from sqlalchemy import select

    from slapgrid.master.tables import TokenRow

    query = select(TokenRow.digest, TokenRow.used_at)
    return store.read_with(lambda session: sorted(tuple(row) for row in session.execute(query)))


def stored_text(store: MasterStore) -> str:
    """Every row of every table, as text."""
    from slapgrid.master.tables import Base

    tables = Base.metadata.sorted_tables
    return store.read_with(
        lambda session: repr([session.execute(t.select()).all() for t in tables])
    )


# --- the commands on the master's machine --------------------------------------------------


def test_computer_add_writes_its_files_and_prints_the_lines(tmp_path: Path) -> None:
    out, data = tmp_path / "node-creds", tmp_path / "master"
    result = run(master_group, "computer", "add", COMP, "--out", out, "--data-dir", data)
    assert result.exit_code == 0, result.output
    assert result.output == (
        f"[slapos]\ncomputer_id = {COMP}\nkey_file = {out}/key.pem\n"
        f"cert_file = {out}/cert.pem\nmaster_ca_file = {out}/ca.pem\n"
    )
    assert (mode(out), mode(out / "key.pem")) == (0o700, 0o600)
    assert (mode(out / "cert.pem"), mode(out / "ca.pem")) == (0o644, 0o644)
    assert (out / "ca.pem").read_bytes() == (data / "pki" / "ca.pem").read_bytes()
    assert identity_in(out, out / "ca.pem") == Identity.for_computer(COMP)
    parser = configparser.ConfigParser()
    parser.read_string(result.output)
    assert Path(parser["slapos"]["key_file"]).is_file()
    assert mode(data / "pki" / "ca.key") == 0o600
    store = MasterStore(data / "slapgrid-master.db", create=False)
    assert credential_rows(store) == [("computer", COMP, None)]
    store.close()


def test_user_add_prints_the_slapconsole_lines_user_commands_read(tmp_path: Path) -> None:
    out, data = tmp_path / "alice", tmp_path / "master"
    result = run(master_group, "user", "add", "alice", "--out", out, "--data-dir", data)
    assert result.exit_code == 0, result.output
    assert result.output == (
        f"[slapconsole]\nkey_file = {out}/key.pem\ncert_file = {out}/cert.pem\n"
        f"master_ca_file = {out}/ca.pem\n"
    )
    config = tmp_path / "slapos-client.cfg"
    config.write_text(result.output)
    client = load_client_config(str(config), "http://127.0.0.1:1/", COMP)
    assert (client.key_file, client.cert_file) == (out / "key.pem", out / "cert.pem")
    assert client.master_ca_file == out / "ca.pem"
    assert identity_in(out, out / "ca.pem") == Identity.for_user("alice")


def test_the_configuration_file_places_the_pki_beside_its_database(tmp_path: Path) -> None:
    config = tmp_path / "proxy.cfg"
    config.write_text(f"[slapproxy]\ndatabase_uri = {tmp_path / 'db' / 'proxy.db'}\n")
    (tmp_path / "db").mkdir()
    result = run(master_group, "computer", "add", COMP, "--out", tmp_path / "o", "--cfg", config)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "db" / "pki" / "ca.key").is_file()
    config.write_text(config.read_text() + f"pki_dir = {tmp_path / 'elsewhere'}\n")
    result = run(master_group, "user", "add", "bob", "--out", tmp_path / "u", "--cfg", config)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "elsewhere" / "ca.key").is_file()


def test_existing_files_and_bad_names_are_refused_in_one_line(tmp_path: Path) -> None:
    out, data = tmp_path / "o", tmp_path / "m"
    assert (
        run(master_group, "computer", "add", COMP, "--out", out, "--data-dir", data).exit_code == 0
    )
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for args in (
        ("computer", "add", COMP, "--out", out),
        ("user", "add", "carol", "--out", out),
    ):
        result = run(master_group, *args, "--data-dir", data)
        assert result.exit_code != 0
        assert "exists: not replaced" in str(result.exception)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    result = run(
        master_group, "computer", "add", "bad\x01id", "--out", tmp_path / "x", "--data-dir", data
    )
    assert result.exit_code != 0 and "control characters" in str(result.exception)
    assert not (tmp_path / "x").exists()


# --- registration over HTTP ----------------------------------------------------------------


@pytest.fixture
def master(tmp_path: Path, database: str) -> Iterator[MasterServer]:
    store = MasterStore(database, default_computer=COMP)
    authority = Authority.open(tmp_path / "pki")
    with MasterServer(store, authority=authority) as server:
        yield server
    store.close()


def test_user_commands_verify_the_master_with_the_ca_of_their_configuration(
    master: MasterServer, tmp_path: Path
) -> None:
    out = tmp_path / "alice"
    added = run(master_group, "user", "add", "alice", "--out", out, *where(master, tmp_path))
    assert added.exit_code == 0, added.output
    foreign = Authority.open(tmp_path / "elsewhere").ca_file
    config = tmp_path / "slapos-client.cfg"

    def show(slapos: str = "", console: str = added.output) -> Result:
        config.write_text(f"[slapos]\nmaster_url = {master.url}\n{slapos}{console}")
        return run(show_command, "--cfg", config)

    def refused(result: Result) -> bool:
        return "CERTIFICATE_VERIFY_FAILED" in str(result.exception)

    shown = show()
    assert shown.exit_code == 0 and "no instances requested" in shown.output, shown.output
    assert refused(show(console=added.output.replace(str(out / "ca.pem"), str(foreign))))
    # without one in [slapconsole], the node's [slapos] master_ca_file is the CA
    console = added.output.replace(f"master_ca_file = {out / 'ca.pem'}\n", "")
    assert refused(show(f"master_ca_file = {foreign}\n", console))
    assert show(f"master_ca_file = {out / 'ca.pem'}\n", console).exit_code == 0


def where(master: MasterServer, tmp_path: Path) -> tuple[str, ...]:
    """The master commands' options naming the running master's database and CA."""
    return ("--database", master.store.url, "--pki-dir", str(tmp_path / "pki"))


def token_for(master: MasterServer, tmp_path: Path, computer: str = COMP) -> str:
    """`slapgrid master token create`, against the running master's database."""
    result = run(master_group, "token", "create", computer, *where(master, tmp_path))
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert len(token) >= 40 and "\n" not in token
    return token


def register(master: MasterServer, token: str, out: Path, computer: str = COMP) -> Result:
    args = ("--master-url", master.url, "--token", token, "--computer-id", computer)
    return run(register_command, *args, "--out", out)


def test_a_token_registers_a_node_once(master: MasterServer, tmp_path: Path) -> None:
    token = token_for(master, tmp_path)
    result = register(master, token, tmp_path / "node")
    assert result.exit_code == 0, result.output
    out = tmp_path / "node"
    assert result.output == (
        f"[slapos]\nmaster_url = {master.url}\ncomputer_id = {COMP}\n"
        f"key_file = {out}/key.pem\ncert_file = {out}/cert.pem\nmaster_ca_file = {out}/ca.pem\n"
    )
    assert mode(out / "key.pem") == 0o600
    assert identity_in(out, tmp_path / "pki" / "ca.pem") == Identity.for_computer(COMP)
    assert credential_rows(master.store) == [("computer", COMP, None)]
    again = register(master, token, tmp_path / "again")
    assert again.exit_code != 0
    assert "refused the token" in str(again.exception)
    assert not (tmp_path / "again").exists()
    assert credential_rows(master.store) == [("computer", COMP, None)]


def test_expired_unknown_and_foreign_tokens_are_refused_and_change_nothing(
    master: MasterServer, tmp_path: Path
) -> None:
    day_ago = now_us() - int(datetime.timedelta(hours=25).total_seconds() * 1e6)
    expired = credentials.create_token(master.store, COMP, now=day_ago)
    other = token_for(master, tmp_path, "COMP-OTHER")
    dump = token_rows(master.store)
    with https_client(master.url, master.authority) as client:  # anonymous: no certificate yet
        for token in (expired, "not-a-token", "", other):
            response = client.post(
                REGISTER_PATH, data={"title": COMP}, headers={"X-Access-Token": token}
            )
            assert response.status_code == 403, response.text
    assert token_rows(master.store) == dump
    assert credential_rows(master.store) == []
    assert register(master, other, tmp_path / "other", "COMP-OTHER").exit_code == 0


def test_a_token_expires_after_its_hours(tmp_path: Path, database: str) -> None:
    """The clock injected: valid until the last µs of its day, refused from then on."""
    store = MasterStore(database)
    authority = Authority.open(tmp_path / "pki")
    t0 = now_us()
    day = int(datetime.timedelta(hours=24).total_seconds() * 1e6)
    early, late = (credentials.create_token(store, COMP, now=t0) for _ in range(2))
    assert credentials.redeem_token(store, authority, early, COMP, now=t0 + day - 1).certificate
    with pytest.raises(Forbidden):
        credentials.redeem_token(store, authority, late, COMP, now=t0 + day)
    assert token_rows(store)[0][1] is None or token_rows(store)[1][1] is None  # late: unused
    store.close()


def test_the_reference_flow_gets_a_key_made_by_the_master(
    master: MasterServer, tmp_path: Path
) -> None:
    """What `slapos node register` sends: no CSR, so the answer carries a key."""
    with https_client(master.url, master.authority) as client:
        response = client.post(
            REGISTER_PATH,
            data={"title": COMP},
            headers={"X-Access-Token": token_for(master, tmp_path)},
        )
    assert response.status_code == 200, response.text
    answer = response.json()
    key = serialization.load_pem_private_key(answer["key"].encode(), None)
    cert = x509.load_pem_x509_certificate(answer["certificate"].encode())
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert master.authority is not None
    assert master.authority.identity_of(cert) == Identity.for_computer(COMP)


def test_a_bad_request_leaves_the_token_usable(master: MasterServer, tmp_path: Path) -> None:
    token = token_for(master, tmp_path)
    with https_client(master.url, master.authority) as client:
        response = client.post(
            REGISTER_PATH,
            data={"title": COMP, "certificate_request": "junk"},
            headers={"X-Access-Token": token},
        )
    assert response.status_code == 400 and "CSR" in response.text
    assert register(master, token, tmp_path / "node").exit_code == 0


# --- partition certificates ----------------------------------------------------------------


def test_partitions_get_their_own_certificate_and_keep_it(
    master: MasterServer, tmp_path: Path
) -> None:
    master.store.load_computer_configuration(small_computer(COMP, 3))
    master.store.request(InstanceRequest(SR, "web"))
    master.store.request(InstanceRequest(SR, "db"))
    with node_client(master.url, master.authority, COMP, tmp_path / "node") as node:
        cert, key = node.partition_certificate("slappart0")
        assert node.partition_certificate("slappart0") == (cert, key)  # agents rewrite on change
        other = node.partition_certificate("slappart1")
        with pytest.raises(NotFoundError):
            node.partition_certificate("slappart2")  # free
    assert other[0] != cert and other[1] != key
    assert master.authority is not None
    assert master.authority.identity_of(cert.encode()) == Identity.for_partition(COMP, "slappart0")
    private = serialization.load_pem_private_key(key.encode(), None)
    parsed = x509.load_pem_x509_certificate(cert.encode())
    assert parsed.public_key().public_numbers() == private.public_key().public_numbers()
    assert [row for row in credential_rows(master.store) if row[0] == "partition"] == [
        ("partition", COMP, None),
        ("partition", COMP, None),
    ]
    assert "PRIVATE KEY" not in stored_text(master.store)
    repository = tmp_path / "certificates"
    repository.mkdir()
    written = write_certificate(repository, "slappart0", cert, key, (os.getuid(), os.getgid()))
    assert [p.read_text() for p in written] == [cert, key]
    assert [mode(p) for p in written] == [0o400, 0o400]


def test_a_new_instance_in_the_partition_gets_a_new_certificate(
    master: MasterServer, tmp_path: Path
) -> None:
    master.store.load_computer_configuration(small_computer(COMP, 1))
    master.store.request(InstanceRequest(SR, "web"))
    with node_client(master.url, master.authority, COMP, tmp_path / "node") as node:
        first = node.partition_certificate("slappart0")
        master.store.request(InstanceRequest(SR, "web", state="destroyed"))
        node.destroyed("slappart0")
        master.store.request(InstanceRequest(SR, "shop"))
        second = node.partition_certificate("slappart0")
    assert first[0] != second[0] and first[1] != second[1]


def test_master_start_creates_its_ca_once_and_answers_certificates(tmp_path: Path) -> None:
    data, port = tmp_path / "master", free_port()
    code = "from slapgrid.cli.master_cmds import master_group; master_group()"
    command = [sys.executable, "-c", code, "start", "--data-dir", str(data), "--port", str(port)]
    url = f"https://127.0.0.1:{port}/"
    node_files = tmp_path / "node"
    for start in range(2):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_ready(url, process)
            pki = data / "pki"
            if start == 0:
                ca = (pki / "ca.pem").read_bytes()
                server = x509.load_pem_x509_certificate((pki / "server.pem").read_bytes())
                san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                addresses = {str(a) for a in san.value.get_values_for_type(x509.IPAddress)}
                assert addresses == {"127.0.0.1", "::1"}
                assert {mode(pki / n) for n in ("ca.key", "server.key")} == {0o600}
            assert (pki / "ca.pem").read_bytes() == ca  # a restart reads, never re-creates
            if start == 0:
                added = run(
                    master_group,
                    "computer",
                    "add",
                    "local_computer",
                    "--out",
                    node_files,
                    "--data-dir",
                    data,
                )
                assert added.exit_code == 0, added.output
            files = {
                "key_file": node_files / "key.pem",
                "cert_file": node_files / "cert.pem",
                "ca_file": node_files / "ca.pem",
            }
            with SlapClient(url, "local_computer", **files) as node:
                node.load_computer_configuration(small_computer("local_computer", 2))
            store = MasterStore(data / "slapgrid-master.db", default_computer="local_computer")
            store.request(InstanceRequest(SR, f"web{start}"))
            store.close()
            with SlapClient(url, "local_computer", **files) as node:
                cert, _ = node.partition_certificate(f"slappart{start}")
            identity = Identity.for_partition("local_computer", f"slappart{start}")
            assert (
                identity_from_certificate(cert.encode(), x509.load_pem_x509_certificate(ca))
                == identity
            )
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(20)


def test_a_partition_certificate_acts_only_for_the_instance_it_was_issued_for(
    master: MasterServer, tmp_path: Path
) -> None:
    """A former tenant keeps its files, valid for years: the master refuses them once the
    partition holds another instance; a certificate it never handed out is refused too."""
    assert master.authority is not None
    master.store.load_computer_configuration(small_computer(COMP, 1))
    master.store.request(InstanceRequest(SR, "web"))
    identity = Identity.for_partition(COMP, "slappart0")
    read = {"computer_reference": COMP, "computer_partition_reference": "slappart0"}

    def status(client: httpx.Client) -> int:
        return client.get("registerComputerPartition", params=read).status_code

    store = master.store
    with https_client(master.url, master.authority, identity, store=store) as web:
        assert status(web) == 200
        store.request(InstanceRequest(SR, "web", state="destroyed"))
        store.destroyed_partition(COMP, "slappart0")
        assert status(web) == 403  # freed
        store.request(InstanceRequest(SR, "shop"))
        assert status(web) == 403  # another instance's now
        with https_client(master.url, master.authority, identity, store=store) as shop:
            assert status(shop) == 200
    minted = credential_files(master.authority, identity, tmp_path / "minted")
    context = client_context(master.authority.ca_file, *minted)
    with httpx.Client(base_url=master.url, verify=context) as unknown:
        assert status(unknown) == 403
