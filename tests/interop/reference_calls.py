"""Run by the reference venv's Python: make every SLAP call slapgrid makes, with slapos.slap.

Usage: python reference_calls.py BASE_URL. Each case talks to its own master URL,
`BASE_URL<case>/`, so that the recording server can tell the cases' requests apart. Prints,
as JSON, each case's name and the exception it ended with (null when none). The cases and
their values are in tests/wire_cases.py, which our side of the test reads too.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from slapos import slap as slapmodule
from slapos.slap.slap import SoftwareRelease
from slapos.util import dumps

import wire_cases as w


def _release(slap):
    return SoftwareRelease(w.SR, w.COMPUTER, connection_helper=slap._connection_helper)


def _partition(slap):
    return slap.registerComputerPartition(w.COMPUTER, w.PARTITION)


def _request_by_partition(slap, case):
    return _partition(slap).request(
        case.get("software_release", w.SR),
        case.get("software_type"),
        case["reference"],
        shared=case.get("shared", False),
        partition_parameter_kw=case.get("parameters"),
        filter_kw=case.get("filter"),
        state=case.get("state"),
    )


def _request_by_user(slap, case):
    return slap.registerOpenOrder().request(
        case.get("software_release", w.SR),
        case["reference"],
        partition_parameter_kw=case.get("parameters"),
        software_type=case.get("software_type"),
        filter_kw=case.get("filter"),
        state=case.get("state"),
        shared=case.get("shared", False),
    )


def call(slap, case):
    """The reference's way of making `case`, as its node agent, recipes or CLI make it."""
    kind = case["call"]
    if kind == "computer":
        return slap.registerComputer(w.COMPUTER).getComputerPartitionList()
    if kind == "register_partition":
        return _partition(slap).getInstanceParameterDict()
    if kind == "partition_certificate":
        return _partition(slap).getCertificate()
    if kind == "building_software_release":
        return _release(slap).building()
    if kind == "available_software_release":
        return _release(slap).available()
    if kind == "destroyed_software_release":
        return _release(slap).destroyed()
    if kind == "software_release_error":
        return _release(slap).error(case["log"])
    if kind == "started":
        return _partition(slap).started()
    if kind == "stopped":
        return _partition(slap).stopped()
    if kind == "destroyed":
        return _partition(slap).destroyed()
    if kind == "instance_error":
        return _partition(slap).error(case["log"], slave_reference=case.get("slave_reference"))
    if kind == "bang":
        return _partition(slap).bang(case["message"])
    if kind == "rename":
        return _partition(slap).rename(case["new_name"], case.get("slave_reference"))
    if kind == "set_connection":
        return _partition(slap).setConnectionDict(
            case["parameters"], slave_reference=case.get("slave_reference")
        )
    if kind == "update_related_instances":
        return _partition(slap).setComputerPartitionRelatedInstanceList(case["references"])
    if kind == "request_by_partition":
        return _request_by_partition(slap, case)
    if kind == "request_by_user":
        return _request_by_user(slap, case)
    if kind == "supply":
        return slap.registerSupply().supply(w.SR, case["computer"], case.get("state", "available"))
    if kind == "use_computer":
        return slap.registerComputer(w.COMPUTER).reportUsage(case["journal"])
    if kind == "computer_bang":
        return slap.registerComputer(w.COMPUTER).bang(case["message"])
    if kind == "load_computer_configuration":
        return slap.registerComputer(w.COMPUTER).updateConfiguration(dumps(case["definition"]))
    raise AssertionError(f"no reference call for {kind}")


def main(base_url):
    outcomes = {}
    for name, case in w.CASES.items():
        slap = slapmodule.slap()
        slap.initializeConnection(f"{base_url}{name}/")
        try:
            call(slap, case)
            outcomes[name] = None
        except Exception as exc:  # the test compares endings too
            outcomes[name] = type(exc).__name__
    json.dump(outcomes, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
