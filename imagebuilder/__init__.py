"""imagebuilder: from a short TOML recipe to a customized image and a running libvirt domain."""

__version__ = "0.1.0"
