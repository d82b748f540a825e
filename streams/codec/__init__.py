"""Records <-> bytes on the wire, in either of our two framings (docs/wire-formats.md).

```python
codec = Codec()                                  # Avro single-object encoding, no registry
data = codec.encode(task)                        # a generated model, or ("TaskRequest", {...})
decoded = codec.decode(data)                     # Decoded(schema, record dict, wire_format)
task = codec.decode_model(data)                  # the pydantic model
```

`decode` reads either framing whatever `wire_format` says (it is what `encode` writes), choosing
by the first byte: 0xC3 single-object, 0x00 Confluent. Every decode failure is a `CodecError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from octollm.codec.base import (
    NO_CONTEXT,
    Decoded,
    Deserializer,
    SerializationContext,
    Serializer,
)
from octollm.codec.confluent import (
    ConfluentDeserializer,
    ConfluentSerializer,
    LazyRegistry,
    RegistryClient,
)
from octollm.codec.errors import (
    BodyTooLarge,
    CodecError,
    EmptyPayload,
    SchemaMismatch,
    UnknownFormat,
)
from octollm.codec.single_object import SingleObjectDeserializer, SingleObjectSerializer
from octollm.contracts.models import MODELS, AvroModel
from octollm.contracts.schemas import ContractSchema, get_schema
from octollm.settings import Settings, WireFormat

DEFAULT_MAX_BYTES = 1 << 20


class Codec:
    """Encode records in one wire format, decode both. Safe to share between threads."""

    def __init__(
        self,
        wire_format: WireFormat | str = WireFormat.AVRO,
        registry_url: str | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        *,
        registry_client: RegistryClient | None = None,
    ) -> None:
        self.wire_format = WireFormat(wire_format)
        self.max_bytes = max_bytes
        registry = LazyRegistry(registry_url, registry_client)
        if self.wire_format is WireFormat.CONFLUENT and not registry.configured:
            raise ValueError("wire_format=confluent needs registry_url (OCTO_SCHEMA_REGISTRY_URL)")
        self._serializer: Serializer = (
            ConfluentSerializer(registry)
            if self.wire_format is WireFormat.CONFLUENT
            else SingleObjectSerializer()
        )
        deserializers: list[Deserializer] = [
            SingleObjectDeserializer(),
            ConfluentDeserializer(registry),
        ]
        self._by_magic = {d.magic_byte: d for d in deserializers}
        self._by_model: dict[type[BaseModel], ContractSchema] = {}
        self._by_name: dict[str, ContractSchema] = {}

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> Codec:
        return cls(settings.wire_format, settings.schema_registry_url, **kwargs)

    # --- encoding ---------------------------------------------------------------------------
    def _schema_of_model(self, model: type[BaseModel]) -> ContractSchema:
        schema = self._by_model.get(model)
        if schema is None:
            name = getattr(model, "__avro_name__", None)
            if not isinstance(name, str):
                raise TypeError(f"{model.__name__} is not a generated contract model")
            schema = self._by_model[model] = get_schema(name)
        return schema

    def _schema_named(self, name: str) -> ContractSchema:
        schema = self._by_name.get(name)
        if schema is None:
            try:
                schema = self._by_name[name] = get_schema(name)
            except KeyError:
                raise SchemaMismatch(f"no contract named {name!r}") from None
        return schema

    def encode(
        self,
        record: BaseModel | tuple[str, Mapping[str, Any]],
        *,
        topic: str | None = None,
    ) -> bytes:
        """Frame `record`: a generated model, or (record name, dict fastavro can write).

        `topic` is needed for the Confluent format (the registry subject is `<topic>-value`).
        Raises `SchemaMismatch` / `InvalidUtf8` for a record that does not fit its schema,
        `BodyTooLarge` over `max_bytes`, `RegistryUnavailable` when the registry fails.
        """
        if isinstance(record, AvroModel):
            schema = self._schema_of_model(type(record))
            body = record.to_avro()
            trusted = True
        elif isinstance(record, tuple) and len(record) == 2 and isinstance(record[0], str):
            schema = self._schema_named(record[0])
            body = record[1]  # type: ignore[assignment]
            trusted = False
        else:
            raise TypeError(f"cannot encode {type(record).__name__}: pass a model or (name, dict)")
        ctx = NO_CONTEXT if topic is None else SerializationContext(topic)
        data = self._serializer.serialize(schema, body, ctx, trusted=trusted)
        if len(data) > self.max_bytes:
            raise BodyTooLarge(f"{schema.name}: {len(data)} bytes is over {self.max_bytes}")
        return data

    # --- decoding ---------------------------------------------------------------------------
    def decode(
        self, data: bytes | bytearray | memoryview | None, *, topic: str | None = None
    ) -> Decoded:
        """The record in `data`, framed either way; raises only `CodecError` subclasses."""
        if not data:
            raise EmptyPayload("the value is empty")
        if type(data) is not bytes:
            data = bytes(data)
        if len(data) > self.max_bytes:
            raise BodyTooLarge(f"{len(data)} bytes is over {self.max_bytes}")
        deserializer = self._by_magic.get(data[0])
        if deserializer is None:
            raise UnknownFormat(
                f"first byte 0x{data[0]:02x} is neither 0xc3 (single-object) nor 0x00 (Confluent)"
            )
        ctx = NO_CONTEXT if topic is None else SerializationContext(topic)
        return deserializer.deserialize(data, ctx)

    def decode_model(
        self, data: bytes | bytearray | memoryview | None, *, topic: str | None = None
    ) -> AvroModel:
        """The record in `data` as its generated pydantic model."""
        decoded = self.decode(data, topic=topic)
        model = MODELS[decoded.schema.full_name]
        try:
            return model.from_avro(decoded.record)
        except ValidationError as exc:  # e.g. an int field holding more than 32 bits
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise SchemaMismatch(f"{decoded.schema.name}.{where}: {first['msg']}") from None


__all__ = [
    "DEFAULT_MAX_BYTES",
    "Codec",
    "CodecError",
    "Decoded",
    "Deserializer",
    "SerializationContext",
    "Serializer",
]
