"""Offline disk work through one libguestfs appliance per build."""
