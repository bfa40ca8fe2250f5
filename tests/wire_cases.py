"""Every SLAP call slapgrid makes, as data both clients read (ours and the reference's).

Plain values only: the reference's Python imports this module too (reference_calls.py).
Texts carry what form encoding can get wrong: non-ASCII, newlines, `&`, `=`, `+`, `%`,
spaces and markup.
"""

COMPUTER = "COMP-1234"
PARTITION = "slappart0"
SR = "https://example.com/software/web/software.cfg?ref=a&b=c%20d"
TEXT = 'line one\nl\'été & <b>=+ 100% "done"'
SHARED = "SHARED-1"

PARAMETERS = {"zeta": "1", "alpha": "a&b<c>", "json": '{"k": [1, 2]}', "n": 3, "ok": True}
FILTER = {"computer_guid": "COMP-9", "retention_delay": "7"}

CASES = {
    # what every node run reads
    "computer": {"call": "computer"},
    "computer_legacy": {"call": "computer"},  # getFullComputerInformation answers 404
    "register_partition": {"call": "register_partition"},
    "partition_certificate": {"call": "partition_certificate"},
    # slapgrid software
    "building_software_release": {"call": "building_software_release"},
    "available_software_release": {"call": "available_software_release"},
    "destroyed_software_release": {"call": "destroyed_software_release"},
    "software_release_error": {"call": "software_release_error", "log": TEXT},
    # slapgrid instance and report
    "started": {"call": "started"},
    "stopped": {"call": "stopped"},
    "destroyed": {"call": "destroyed"},
    "instance_error": {"call": "instance_error", "log": TEXT},
    "instance_error_shared": {"call": "instance_error", "log": TEXT, "slave_reference": SHARED},
    "instance_error_empty": {"call": "instance_error", "log": ""},
    "update_related_instances": {
        "call": "update_related_instances",
        "references": ["child one", "other&more"],
    },
    "update_related_instances_empty": {"call": "update_related_instances", "references": []},
    "use_computer": {"call": "use_computer", "journal": '<?xml version="1.0"?><journal/>'},
    "use_computer_empty": {"call": "use_computer", "journal": ""},  # nothing is sent
    # the supervisord event listener, promises, boot
    "bang": {"call": "bang", "message": TEXT},
    "computer_bang": {"call": "computer_bang", "message": "Reboot"},
    # slapgrid format
    "load_computer_configuration": {
        "call": "load_computer_configuration",
        "definition": {
            "reference": COMPUTER,
            "address": "10.0.0.1",
            "netmask": "255.255.255.0",
            "partition_list": [
                {
                    "reference": "slappart0",
                    "address_list": [{"addr": "10.0.0.2", "netmask": "255.255.255.0"}],
                    "tap": {"name": "slaptap0"},
                }
            ],
        },
    },
    # what instances do through the client (recipes, our promises)
    "rename": {"call": "rename", "new_name": "new name & é"},
    "rename_shared": {"call": "rename", "new_name": "renamed", "slave_reference": SHARED},
    "set_connection": {"call": "set_connection", "parameters": {"url": TEXT, "b": "2"}},
    "set_connection_shared": {
        "call": "set_connection",
        "parameters": {"site": "https://front"},
        "slave_reference": SHARED,
    },
    "request_by_partition": {"call": "request_by_partition", "reference": "child"},
    "request_by_partition_full": {
        "call": "request_by_partition",
        "reference": "front é&",
        "software_type": "frontend",
        "parameters": PARAMETERS,
        "filter": FILTER,
        "state": "stopped",
        "shared": True,
    },
    # slapgrid request / show (a user)
    "request_by_user": {"call": "request_by_user", "reference": "My Instance"},
    "request_by_user_full": {
        "call": "request_by_user",
        "reference": "My Instance",
        "software_type": "frontend",
        "parameters": PARAMETERS,
        "filter": FILTER,
        "state": "started",
        "shared": True,
    },
    "request_by_user_destroyed": {
        "call": "request_by_user",
        "reference": "gone",
        "state": "destroyed",
    },
    # slapgrid supply
    "supply": {"call": "supply", "computer": COMPUTER},
    "supply_destroyed": {"call": "supply", "computer": "COMP-9", "state": "destroyed"},
}
