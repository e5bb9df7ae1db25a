"""Where a build publishes besides libvirt pools and its image file: registries (KubeVirt containerDisks,
containerdisk.py), virt-builder repositories (repo.py), other hypervisors' formats (formats.py, ova.py);
elsewhere.py runs them for a build."""

from imagebuilder.publish.containerdisk import Attachment
from imagebuilder.publish.elsewhere import Elsewhere, is_current

__all__ = ["Attachment", "Elsewhere", "is_current"]
