"""Who a child runs as: the owner of its directory, under an explicit root-group policy.

The agent's euid is injected, so the root-only rules are checked without root.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from slapgrid.node.identity import (
    IdentityError,
    RootGroup,
    account,
    agent_identity,
    home_of,
    run_as,
)

ROOT = 0
NOBODY = pwd.getpwnam("nobody")
UNKNOWN_UID = 54321  # no passwd entry


def test_a_non_root_agent_never_switches(tmp_path: Path) -> None:
    user = run_as(tmp_path, uid=NOBODY.pw_uid, gid=NOBODY.pw_gid, euid=1000)
    assert not user.switch
    assert user.popen_options() == {}
    assert user.file_owner is None
    assert user.owner.name == "nobody"  # still the owner's HOME and USER


def test_root_switches_to_the_owner_with_its_groups(tmp_path: Path) -> None:
    user = run_as(tmp_path, uid=NOBODY.pw_uid, gid=NOBODY.pw_gid, euid=ROOT)
    assert user.switch and user.file_owner == (NOBODY.pw_uid, NOBODY.pw_gid)
    options = user.popen_options()
    assert (options["user"], options["group"]) == (NOBODY.pw_uid, NOBODY.pw_gid)
    assert options["extra_groups"] == os.getgrouplist("nobody", NOBODY.pw_gid)
    assert user.owner.home == NOBODY.pw_dir


@pytest.mark.parametrize("policy", list(RootGroup))
def test_a_root_owned_directory_runs_as_the_root_agent(tmp_path: Path, policy) -> None:
    user = run_as(tmp_path, policy, uid=ROOT, gid=ROOT, euid=ROOT)
    assert not user.switch


def test_group_root_is_refused_to_builds(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="group 0"):
        run_as(tmp_path, RootGroup.REFUSE, uid=NOBODY.pw_uid, gid=ROOT, euid=ROOT)


def test_group_root_is_kept_for_promises(tmp_path: Path) -> None:
    user = run_as(tmp_path, RootGroup.ALLOW, uid=NOBODY.pw_uid, gid=ROOT, euid=ROOT)
    assert user.switch
    assert (user.owner.uid, user.owner.gid) == (NOBODY.pw_uid, ROOT)


def test_an_owner_without_passwd_entry_is_named_by_uid(tmp_path: Path) -> None:
    user = run_as(tmp_path, uid=UNKNOWN_UID, gid=UNKNOWN_UID, euid=ROOT)
    assert user.switch
    assert (user.owner.name, user.owner.home) == (str(UNKNOWN_UID), str(tmp_path))
    assert user.owner.groups == (UNKNOWN_UID,)


def test_the_owner_defaults_to_the_directory_owner(tmp_path: Path) -> None:
    info = tmp_path.stat()
    user = run_as(tmp_path, euid=info.st_uid)
    assert not user.switch  # the agent's own directory: rootless mode
    assert (user.owner.uid, user.owner.gid) == (info.st_uid, info.st_gid)


def test_home_and_accounts(tmp_path: Path) -> None:
    assert home_of(tmp_path) == Path(account(tmp_path.stat().st_uid, home=tmp_path).home)
    me = agent_identity()
    assert me.uid == os.geteuid() and me.is_root == (os.geteuid() == 0)
    stranger = agent_identity(UNKNOWN_UID)
    assert (stranger.name, stranger.known) == (str(UNKNOWN_UID), False)
