"""How many workers serve, read from flags and `[slapproxy]`; only PostgreSQL has several."""

from __future__ import annotations

from pathlib import Path

import pytest

from slapgrid.cli.master_cmds import master_settings
from slapgrid.errors import ConfigError, SlapgridError
from slapgrid.master.server import check_workers
from slapgrid.master.workers import restart_delay


def test_workers_come_from_the_flag_over_slapproxy_over_one(tmp_path: Path) -> None:
    config = tmp_path / "proxy.cfg"
    config.write_text("[slapproxy]\nworkers = 4\n")
    assert master_settings(None)["workers"] == 1
    assert master_settings(str(config))["workers"] == 4
    assert master_settings(str(config), workers=2)["workers"] == 2
    config.write_text("[slapproxy]\nworkers = 0\n")
    with pytest.raises(ConfigError, match="workers"):
        master_settings(str(config))


def test_several_workers_need_postgresql(tmp_path: Path) -> None:
    check_workers(1, tmp_path / "master.db")
    check_workers(3, "postgresql://slapgrid@/fleet?host=/run/postgresql")
    with pytest.raises(SlapgridError, match="PostgreSQL"):
        check_workers(2, tmp_path / "master.db")


def test_a_worker_dying_young_again_waits_longer_up_to_a_cap() -> None:
    delays = [restart_delay(n) for n in range(1, 12)]
    assert delays[0] == 0.5 and delays == sorted(delays) and delays[-1] == 30.0
