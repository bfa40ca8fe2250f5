"""Promise plugin: the partition's HTTP service accepts TCP connections.

Loaded by the plugin `slapos.cookbook:promise.plugin` writes into etc/plugin/; its
`config-*` options arrive as `extra_config_dict`: `host`, `port`, and `other-port`, a port
to check instead (an instance parameter, to make the promise fail on purpose).
"""

import socket

from slapos.grid.promise import interface
from slapos.grid.promise.generic import GenericPromise
from zope.interface import implementer


@implementer(interface.IPromise)
class RunPromise(GenericPromise):
    def __init__(self, config):
        super().__init__(config)
        self.setPeriodicity(1)

    def sense(self):
        host = self.getConfig("host")
        port = int(self.getConfig("other-port") or self.getConfig("port"))
        try:
            socket.create_connection((host, port), timeout=5).close()
        except OSError as exc:
            self.logger.error("nothing listens on %s:%s: %s", host, port, exc)
        else:
            self.logger.info("%s:%s accepts connections", host, port)

    def anomaly(self):
        # a service down is an anomaly at once, not after three checks
        return self._anomaly(result_count=1, failure_amount=1)
