"""Run by the reference venv's Python: drive a SLAP master with slapos.slap 1.26.1.

Usage: python reference_scenario.py MASTER_URL COMPUTER_ID [KEY CERT USER_KEY USER_CERT].
Prints, as JSON, what the reference client library sees at every step, so the test can
compare two masters.

Two connections, as on a real deployment: the node's (the computer's certificate, KEY and
CERT: format, the partitions, what recipes do) and a user's (USER_KEY, USER_CERT: supply
and request). Without certificates (plain HTTP) both are the same anonymous caller.
"""

import json
import sys

from slapos import slap as slapmodule
from slapos.util import dumps

SR = "https://example.com/software/web/software.cfg"
FRONTEND = "https://example.com/software/frontend/software.cfg"


def described(partition):
    """What a node or a recipe reads from a partition through the public API."""
    complete = all(
        hasattr(partition, name)
        for name in ("_parameter_dict", "_connection_dict", "_instance_guid")
    )
    state = partition.getState()  # fetches a partition registered without data
    busy = partition._software_release_document is not None
    return {
        "id": partition.getId(),
        "state": state,
        "software_release": partition.getSoftwareRelease().getURI() if busy else None,
        "type": partition.getType() if busy else None,
        "parameters": partition.getInstanceParameterDict() if busy else None,
        "connection": partition.getConnectionParameterDict() if busy else None,
        "timestamp": (partition._parameter_dict or {}).get("timestamp") if busy else None,
        "needs_no_refetch": complete if busy else None,
    }


def answer(instance):
    """A request's answer; data first: on the proxy getState() re-fetches and overwrites it."""
    seen = {
        "parameters": instance.getInstanceParameterDict(),
        "connection": instance.getConnectionParameterDict(),
    }
    return {**seen, "id": instance.getId(), "state": instance.getState()}


def connect(url, key_file=None, cert_file=None):
    connection = slapmodule.slap()
    # 1.26.1 refuses master_ca_file (NotImplementedError): it never verifies the master
    connection.initializeConnection(url, key_file=key_file, cert_file=cert_file)
    return connection


def main(url, computer_id, key_file=None, cert_file=None, user_key=None, user_cert=None):
    node = connect(url, key_file, cert_file)
    user = connect(url, user_key, user_cert)
    result = {}

    computer = node.registerComputer(computer_id)
    computer.updateConfiguration(
        dumps(
            {
                "reference": computer_id,
                "address": "10.0.0.1",
                "netmask": "255.255.255.0",
                "partition_list": [
                    {
                        "reference": f"slappart{i}",
                        "address_list": [
                            {"addr": f"10.0.1.{i + 1}", "netmask": "255.255.255.0"},
                            {"addr": f"fd00::{i + 1}", "netmask": "ffff:ffff::"},
                        ],
                        "tap": {"name": f"slaptap{i}"},
                    }
                    for i in range(4)
                ],
            }
        )
    )
    supply = user.registerSupply()
    supply.supply(SR, computer_guid=computer_id)
    supply.supply(FRONTEND, computer_guid=computer_id)

    order = user.registerOpenOrder()
    root = order.request(SR, "web", partition_parameter_kw={"n": 1, "s": "a&b<c>&lt;"})
    result["root"] = answer(root)
    result["frontend"] = answer(order.request(FRONTEND, "frontend"))

    registered = node.registerComputerPartition(computer_id, root.getId())
    result["registered"] = described(registered)
    registered.setConnectionDict({"url": "http://[fd00::1]:8080/", "_": '{"k": [1, 2]}'})

    child = registered.request(SR, "default", "db", partition_parameter_kw={"size": "big"})
    result["child"] = answer(child)
    node.registerComputerPartition(computer_id, child.getId()).setConnectionDict({"dsn": "pg"})
    result["child_again"] = answer(
        registered.request(SR, "default", "db", partition_parameter_kw={"size": "big"})
    )

    shared = registered.request(
        FRONTEND, "default", "web-front", shared=True, partition_parameter_kw={"url": "http://x"}
    )
    result["shared"] = answer(shared)

    full = node.registerComputer(computer_id)  # syncs with getFullComputerInformation
    result["software"] = sorted(
        (sr.getURI(), sr.getState()) for sr in full.getSoftwareReleaseList()
    )
    partitions = full.getComputerPartitionList()
    result["partitions"] = [described(p) for p in partitions]
    host = next(p for p in partitions if p.getId() == shared.getId())
    slaves = host.getInstanceParameterDict()["slave_instance_list"]
    result["slaves"] = [
        {k: v for k, v in slave.items() if k not in ("slave_reference", "slave_title")}
        for slave in slaves
    ]
    node.registerComputerPartition(computer_id, host.getId()).setConnectionDict(
        {"site": "https://front"}, slave_reference=slaves[0]["slave_reference"]
    )
    result["shared_again"] = answer(
        registered.request(
            FRONTEND,
            "default",
            "web-front",
            shared=True,
            partition_parameter_kw={"url": "http://x"},
        )
    )
    refreshed = node.registerComputer(computer_id)
    result["root_after"] = described(
        next(p for p in refreshed.getComputerPartitionList() if p.getId() == root.getId())
    )
    print(json.dumps(result, sort_keys=True, default=repr))


if __name__ == "__main__":
    main(*sys.argv[1:7])
