"""The index's user-facing errors (all are ``ValueError``s)."""

__all__ = ["IndexCorruptedError", "IndexMismatchError", "VectorIndexError"]


class VectorIndexError(ValueError):
    """Base class of the index's user-facing errors."""


class IndexMismatchError(VectorIndexError):
    """A saved index does not match the encoder in use (dimension or fingerprint)."""


class IndexCorruptedError(VectorIndexError):
    """A saved index file fails its checksum or cannot be read."""
