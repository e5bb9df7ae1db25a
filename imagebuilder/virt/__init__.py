"""The libvirt adapter: connections, storage pools and volumes, domains and waiting for guests.

Only the modules of this package import `libvirt`, so the rest of the project runs without it.
"""
