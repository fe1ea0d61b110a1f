"""Copy detection in one place: the catalogue of views, fingerprints, framing, matching and
duplicate groups (docs/copy-detection.md)."""
