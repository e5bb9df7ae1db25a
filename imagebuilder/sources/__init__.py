"""Base image sources: url, local path, bootstrap."""
