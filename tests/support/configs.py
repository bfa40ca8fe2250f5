"""The node configuration tests run with, built in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slapgrid.node.config import NodeConfig

NO_MASTER = "http://127.0.0.1:9/"
"""The discard port: a test that must not reach a master fails fast if it tries."""


def node_config(root: Path, **changes: Any) -> NodeConfig:
    """`root/instance` and `root/software` (created), computer COMP-TEST, no master.

    `changes` override any field; roots given there are used as they are.
    """
    values: dict[str, Any] = {
        "master_url": NO_MASTER,
        "computer_id": "COMP-TEST",
        "instance_root": root / "instance",
        "software_root": root / "software",
        **changes,
    }
    for name in ("instance_root", "software_root"):
        Path(values[name]).mkdir(parents=True, exist_ok=True)
    return NodeConfig(**values)


SLAPOS_CFG = """\
[slapos]
master_url = {master}
computer_id = COMP-1
instance_root = {root}/instance
software_root = {root}/software
"""


def write_slapos_cfg(root: Path, extra: str = "") -> Path:
    """`root/slapos.cfg`: the mandatory [slapos] options (an unreachable master), then `extra`;
    the two roots are made."""
    for name in ("instance", "software"):
        (root / name).mkdir(exist_ok=True)
    path = root / "slapos.cfg"
    path.write_text(SLAPOS_CFG.format(root=root, master=NO_MASTER) + extra + "\n")
    return path
