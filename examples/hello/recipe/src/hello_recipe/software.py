"""Recipes run by the software profile, while the Software Release is built.

`instance-profile` renders the instance profile the node agent copies into each partition;
`link-eggs` makes eggs installed by the software run usable by instance runs, which the
node agent always runs offline (see examples/hello/README.md for why that needs help).
"""

from __future__ import annotations

import os
import re

import zc.buildout
import zc.buildout.easy_install

PLACEHOLDER = re.compile(r"\{\{\s*([\w-]+)\s*\}\}")


class InstanceProfile:
    """Copy `template` to `output`, replacing each `{{option}}` by that option's value."""

    def __init__(self, buildout, name, options):
        self.name = name
        self.options = options

    def install(self):
        options = self.options
        with open(options["template"], encoding="utf-8") as handle:
            template = handle.read()

        def substitute(match: re.Match) -> str:
            key = match.group(1)
            if key in ("recipe", "template", "output") or key not in options:
                raise zc.buildout.UserError(
                    f"[{self.name}] {options['template']} uses {{{{{key}}}}}, "
                    "which is not an option of this section"
                )
            return options[key]

        content = PLACEHOLDER.sub(substitute, template)
        temporary = options["output"] + ".tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(content)
        os.replace(temporary, options["output"])
        return [options["output"]]

    update = install


class LinkEggs:
    """Install `eggs` and point an `.egg-link` of the develop-eggs directory at each.

    zc.buildout 6 installs eggs with pip, leaving a `.dist-info` inside each
    `eggs/v5/<name>.egg`. In offline mode buildout only scans the eggs directory itself
    for old-style eggs (`EGG-INFO/PKG-INFO`), so those eggs are invisible to an offline
    instance run; an `.egg-link` in the develop-eggs directory is followed, though.
    """

    def __init__(self, buildout, name, options):
        self.buildout = buildout
        self.options = options

    def install(self):
        settings = self.buildout["buildout"]
        eggs = settings["eggs-directory"]
        develop_eggs = settings["develop-eggs-directory"]
        offline = self.buildout.offline
        working_set = zc.buildout.easy_install.install(
            self.options["eggs"].split(),
            None if offline else eggs,
            links=settings.get("find-links", "").split(),
            index=settings.get("index"),
            path=[develop_eggs, eggs] if offline else [develop_eggs],
            newest=self.buildout.newest,
        )
        links = []
        for dist in working_set:
            if os.path.dirname(os.path.realpath(dist.location)) != os.path.realpath(eggs):
                continue  # a develop egg, or an egg of the Python running buildout
            link = os.path.join(develop_eggs, dist.project_name + ".egg-link")
            with open(link, "w", encoding="utf-8") as handle:  # relative: relocatable
                handle.write(os.path.relpath(dist.location, develop_eggs) + "\n")
            links.append(link)
        return links

    update = install
