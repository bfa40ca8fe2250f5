"""The `slapgrid format` configuration the format unit tests plan with, built in one place."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from slapgrid.node.format.config import FormatConfig

IR, SR = Path("/srv/slapgrid/instance"), Path("/srv/slapgrid/software")


def config(amount: int = 3, **changes: object) -> FormatConfig:
    base = FormatConfig(
        master_url="http://127.0.0.1:1/",
        computer_id="COMP-1",
        instance_root=IR,
        software_root=SR,
        partition_amount=amount,
        computer_json=IR / ".slapgrid" / "computer.json",
    )
    return replace(base, **changes)  # type: ignore[arg-type]
