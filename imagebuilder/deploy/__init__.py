"""Deploying a build on libvirt hosts: preflight, publishing to pools, versions and their alias, the
domain a recipe describes, defining, starting (with the boot watchdog) and waiting. Orchestration
over the thin adapter in virt/, which imports nothing from here."""
