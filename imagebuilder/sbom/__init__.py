"""The software bill of materials of an image: its packages and inputs, as SPDX and CycloneDX."""
