"""Everything that can go wrong turning bytes into a record, or a record into bytes.

Every failure of `Codec.decode` is a `CodecError` subclass, never a raw struct/EOF/Unicode/Key/
ValueError, so a consumer can catch one type and dead-letter the event. `error_class` is the
machine name written to `DeadLetter.error_class` (see docs/wire-formats.md).
"""

from __future__ import annotations


class CodecError(Exception):
    """Base of every encode/decode failure; `error_class` names the kind for the dead letter."""

    error_class: str = "CodecError"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "error_class" not in cls.__dict__:
            cls.error_class = cls.__name__


class EmptyPayload(CodecError):
    """The value is empty (or absent, e.g. a tombstone)."""


class UnknownFormat(CodecError):
    """The first bytes are neither Avro single-object (C3 01) nor Confluent (00) framing."""


class TruncatedBody(CodecError):
    """The header or the body is shorter than it needs to be (end of data while decoding)."""


class UnknownFingerprint(CodecError):
    """A single-object header names a schema fingerprint that none of our contracts has."""


class UnknownSchemaId(CodecError):
    """A Confluent header names a schema id the registry does not know."""


class SchemaMismatch(CodecError):
    """The data does not fit the schema: wrong or invalid types, an unknown enum symbol or union
    branch, a writer schema the reader cannot resolve, or (encoding) a dict that is not a record
    of the schema."""


#: Another name for `SchemaMismatch`: the record has the wrong types for its schema.
WrongTypes = SchemaMismatch


class BodyTooLarge(CodecError):
    """The payload is over the codec's size limit (1 MiB unless configured)."""


class InvalidUtf8(CodecError):
    """A string field is not valid UTF-8 (or, encoding, not encodable as UTF-8)."""


class TrailingBytes(CodecError):
    """The payload goes on after the end of the record."""


class RegistryUnavailable(CodecError):
    """The schema registry could not be reached, failed, or is not configured."""


__all__ = [
    "BodyTooLarge",
    "CodecError",
    "EmptyPayload",
    "InvalidUtf8",
    "RegistryUnavailable",
    "SchemaMismatch",
    "TrailingBytes",
    "TruncatedBody",
    "UnknownFingerprint",
    "UnknownFormat",
    "UnknownSchemaId",
    "WrongTypes",
]
