"""What software, instance and report would do on this node now, and why; changes nothing.

One plan for the whole node, as `slapgrid plan` shows it: the disk is only looked at, the
computer document is the one the master answered.
"""

from __future__ import annotations

from slapgrid.node.config import NodeConfig
from slapgrid.node.instance import run as instance
from slapgrid.node.planner import Action
from slapgrid.node.report.plan import plan_report
from slapgrid.node.software import run as software
from slapgrid.node.state import StateStore
from slapgrid.slap.documents import Computer


def plan_node(config: NodeConfig, computer: Computer) -> list[Action]:
    """Software first, then partitions, then destructions: the order a one-shot run takes."""
    store = StateStore(config.instance_root)
    return [
        *software.plan_releases(config, computer),
        *instance.plan_partitions(config, computer, store, force=False, only=frozenset()),
        *plan_report(config, computer).actions,
    ]
