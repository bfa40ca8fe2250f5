"""Run a partition's slapos.core plugins through the Software Release's own promise launcher.

slapgrid (slapgrid.node.promises.generic) starts this file with the release's Python, as the
partition's user, with the partition as current directory, and writes one JSON request on
stdin: `{"sys_path": [...], "config": {...}}`. `sys_path` is what the plugins put on
`sys.path` (the release's eggs, its slapos.core among them); `config` holds the launcher's
keys. The launcher runs the plugins and writes each result itself, in
`P/.slapgrid/promise/result/<title>.status.json`, as under the reference agent.

Exit 0: every promise kept; 2: a promise failed; 1: the launcher could not run. On a non-zero
exit the last line of output is `MARK` followed by the reason as a JSON string.

This file imports nothing from slapgrid and keeps to Python 3.6: it runs under the release's
interpreter, which may be older than the agent's.
"""

import json
import logging
import sys

MARK = "slapgrid-promise-launcher: "


def _fail(code, reason):
    sys.stdout.flush()
    sys.stdout.write("\n" + MARK + json.dumps(reason) + "\n")
    sys.stdout.flush()
    sys.exit(code)


def main():
    request = json.load(sys.stdin)
    sys.path[0:0] = request["sys_path"]
    try:
        from slapos.grid.promise import PromiseError, PromiseLauncher
    except Exception as exc:  # an egg missing, or a release without slapos.core
        reason = f"{type(exc).__name__}: {exc}"
        _fail(1, f"cannot import slapos.core's promise launcher from the plugins' eggs: {reason}")
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        PromiseLauncher(config=request["config"], logger=logging.getLogger("promise")).run()
    except PromiseError as exc:
        _fail(2, str(exc))
    except Exception as exc:
        _fail(1, f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
