"""Run by the reference's Python: write a computer definition the way `slapos node format`
does (slapos.format.Computer.dump: computer_xml and computer_json), without root.

Usage: reference_format.py DIRECTORY — writes DIRECTORY/slapos.xml and slapos.json for
three partitions under DIRECTORY/instance, owned by users slapuser7 … slapuser9. The
reference only looks these users up (and ignores the answer) when it saves each partition's
resource file, so the look-up is stubbed: they need not exist on this machine.
"""

import logging
import os
import pwd
import sys

from slapos.format import Computer, Interface, Partition, Tap, Tun, User


def main(directory):
    pwd.getpwnam = lambda name: None
    logger = logging.getLogger("reference-format")
    instance = os.path.join(directory, "instance")
    computer = Computer(
        "COMP-REF",
        interface=Interface(logger, "eth0", "10.0.0.0/16", "eth0", 16),
        addr="2001:db8:42::1",
        netmask="ffff:ffff:ffff:ffff::",
        ipv6_interface="eth0",
        partition_has_ipv6_range=True,
        tap_gateway_interface="",
        tap_ipv6=True,
        instance_root=instance,
        software_root=os.path.join(directory, "software"),
        config={},
    )
    tun = Tun("slaptun0", 0, 3)  # as create_tun makes them: its own 172.16/12 subnet
    for index in range(3):
        reference = f"slappart{index}"
        path = os.path.join(instance, reference)
        os.makedirs(path)
        tap = Tap(f"slaptap{index}")
        tap.ipv6_addr = f"2001:db8:42:0:{0x20 + index:x}:ffff:ffff:ffff"
        tap.ipv6_netmask = "ffff:ffff:ffff:ffff:ffff::"
        tap.ipv6_gateway = f"2001:db8:42:0:{0x20 + index:x}::1"
        tap.ipv6_network = f"2001:db8:42:0:{0x20 + index:x}::1/80"
        tap.ipv4_addr = f"10.0.{100 + index}.1"
        tap.ipv4_netmask = "255.255.255.0"
        tap.ipv4_gateway = f"10.0.{100 + index}.254"
        tap.ipv4_network = f"10.0.{100 + index}.0"
        computer.partition_list.append(
            Partition(
                reference=reference,
                path=path,
                user=User(f"slapuser{7 + index}", ["slapsoft"]),
                address_list=[
                    {"addr": f"10.0.24.{20 + index}", "netmask": "255.255.0.0"},
                    {
                        "addr": f"2001:db8:42::{0x50 + index:x}",
                        "netmask": "ffff:ffff:ffff:ffff::",
                    },
                ],
                ipv6_range={
                    "addr": f"2001:db8:42:0:{0x10 + index:x}::",
                    "netmask": "ffff:ffff:ffff:ffff:ffff::",
                    "network": f"2001:db8:42:0:{0x10 + index:x}::/80",
                    "prefixlen": 80,
                },
                tap=tap,
                tun=tun if index == 0 else None,
            )
        )
    computer.dump(
        os.path.join(directory, "slapos.xml"), os.path.join(directory, "slapos.json"), logger
    )


if __name__ == "__main__":
    main(sys.argv[1])
