"""Trust in an image: its SBOM written with the build, its signed SLSA provenance, and checking both."""
