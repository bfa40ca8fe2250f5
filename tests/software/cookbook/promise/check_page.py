"""Promise plugin: the partition's page answers 200 and holds the expected text.

`config-url` and `config-text` of the plugin's section arrive as `extra_config_dict`.
"""

import urllib.request

from slapos.grid.promise import interface
from slapos.grid.promise.generic import GenericPromise
from zope.interface import implementer


@implementer(interface.IPromise)
class RunPromise(GenericPromise):
    def __init__(self, config):
        super().__init__(config)
        self.setPeriodicity(1)

    def sense(self):
        url, text = self.getConfig("url"), self.getConfig("text")
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                page = answer.read().decode("utf-8", "replace")
        except OSError as exc:
            self.logger.error("%s does not answer: %s", url, exc)
            return
        if text in page:
            self.logger.info("%s answered with %r", url, text)
        else:
            self.logger.error("%s answered without %r", url, text)
