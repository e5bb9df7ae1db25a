"""The thin libvirt adapter: connections, storage pools and volumes, streams, networks, domains and
their XML, consoles and waiting for guests. It takes plain values and callables and imports, of this
project, only errors, files, hardware and run (docs/architecture.md); deploy/ decides above it.
"""
