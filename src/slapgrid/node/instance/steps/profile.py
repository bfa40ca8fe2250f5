"""Step 2: the partition's `buildout.cfg`, from the Software Release's instance profile."""

from __future__ import annotations

import os

from slapgrid.node.files import atomic_write
from slapgrid.node.instance.deployment import DeployError, Deployment
from slapgrid.node.instance.partition import instance_profile, render_buildout


def write_profile(job: Deployment) -> None:
    template = instance_profile(job.software)
    if template is None:
        raise DeployError(
            f"software release {job.partition.software_release_url} has no instance.cfg"
        )
    job.refresh_certificates()
    key_file, cert_file = job.certificate_files()
    text = render_buildout(
        job.config,
        job.partition,
        template.read_text(encoding="utf-8"),
        key_file=key_file,
        cert_file=cert_file,
    )
    path = job.paths.buildout_cfg
    atomic_write(path, text, 0o640)
    if os.geteuid() == 0:
        os.chown(path, 0, job.owner()[1])  # readable by the partition, not writable
