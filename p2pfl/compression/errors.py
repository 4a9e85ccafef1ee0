"""The one error type of the compression package.

``CodecError`` is raised for anything wrong with a blob (truncated, corrupted,
hostile, made by another codec) or with a tensor a codec cannot represent
(non-finite values for a quantiser, a level that overflows int32).  Bad codec
*specs* are configuration errors and raise :class:`p2pfl.errors.ConfigError`.
"""

__all__ = ["CodecError"]


class CodecError(ValueError):
    """A blob that cannot be decoded, or a tensor that cannot be encoded."""
