"""Errors raised while decoding stored bytes."""

from coldvault.errors import DamagedError, UnsupportedFormatError


class FormatError(DamagedError):
    """Bytes that do not decode: truncated, corrupt, or not what they claim to be."""


class AuthenticationError(FormatError):
    """An AEAD tag or a content id did not match: the bytes were changed."""


class UnknownVersionError(UnsupportedFormatError):
    """A structure of a newer version, or with a feature this reader does not know."""
