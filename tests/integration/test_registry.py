"""A real schema registry (Apicurio Registry 3.3.3, Confluent-compatible API) and the codecs.

One registry serves the whole module (``registry_url``, started through
:mod:`stream.registry` on a free port; its distribution is cached in ``$STREAM_HOME``
so it is downloaded once per machine). Records are written with confluent-kafka's own
serializers and read with :mod:`stream.formats`; no Kafka broker is involved. The test
that stops and restarts the registry runs last (file order): the storage is in memory,
so after the restart it registers what it needs again.
"""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from stream import registry
from stream.cli import main as stream_main
from stream.errors import ConfigError, TransientError
from stream.formats import FormatEncoder, make_decoder
from tests.conftest import unique_name
from tests.support.registry import LocalRegistry, running_registry

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="session")
def local_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    yield from running_registry(tmp_path_factory, "registry-home")


@pytest.fixture(scope="session")
def registry_url(local_registry: LocalRegistry) -> str:
    return local_registry.url


@pytest.fixture
def client(registry_url: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": registry_url})


def avro_record(*fields: dict[str, Any]) -> str:
    return json.dumps({"type": "record", "name": "Event", "namespace": "demo", "fields": fields})


V1 = avro_record({"name": "id", "type": "string"}, {"name": "count", "type": "int"})
V2 = avro_record(
    {"name": "id", "type": "string"},
    {"name": "count", "type": "int"},
    {"name": "tag", "type": "string", "default": "none"},
)
V3_INCOMPATIBLE = avro_record(
    {"name": "id", "type": "string"},
    {"name": "count", "type": "int"},
    {"name": "owner", "type": "string"},  # new field without a default: not BACKWARD
)
JSON_SCHEMA = json.dumps(
    {
        "type": "object",
        "properties": {"id": {"type": "string"}, "count": {"type": "integer"}},
        "required": ["id"],
    }
)


def ctx(topic: str) -> SerializationContext:
    return SerializationContext(topic, MessageField.VALUE)


def decoded(values: list[bytes | None]) -> list[Any]:
    return [None if value is None else orjson.loads(value) for value in values]


# --- the registry itself -------------------------------------------------------------


def test_start_is_idempotent_and_status_reports_it(
    local_registry: LocalRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    began = time.monotonic()
    again = registry.start(local_registry.port, local_registry.home, app=local_registry.app)
    assert again == local_registry.url
    assert time.monotonic() - began < 3.0
    state = registry.status(local_registry.port, local_registry.home)
    assert state.running and state.pid is not None
    assert (
        state.url == local_registry.url == f"http://127.0.0.1:{local_registry.port}/apis/ccompat/v7"
    )
    assert (state.data_dir / "registry.log").stat().st_size > 0
    with urllib.request.urlopen(local_registry.url + "/subjects", timeout=5) as answer:
        assert answer.status == 200
    argv = [
        "registry",
        "status",
        "--port",
        str(local_registry.port),
        "--home",
        str(local_registry.home),
    ]
    assert stream_main(argv) == 0
    assert f"url:       {local_registry.url}" in capsys.readouterr().out


def test_status_reports_an_external_registry(
    local_registry: LocalRegistry,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [
        "registry",
        "status",
        "--port",
        str(local_registry.port),
        "--home",
        str(local_registry.home),
    ]
    monkeypatch.setenv(registry.URL_ENV, local_registry.url)
    assert stream_main(argv) == 0
    assert "answers; the project uses that registry" in capsys.readouterr().out
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/apis/ccompat/v7"
    monkeypatch.setenv(registry.URL_ENV, closed)
    assert stream_main(argv) == 3
    assert "does not answer" in capsys.readouterr().out


def test_start_with_an_external_registry_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(registry.URL_ENV, "http://registry.example:8081")
    assert stream_main(["registry", "start", "--home", str(tmp_path)]) == 0
    assert "no local registry started" in capsys.readouterr().out
    assert not any(tmp_path.iterdir())


def test_a_port_held_by_something_else_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(registry.RegistryPortInUseError, match=f"port {port}"):
            registry.start(port, tmp_path, app=tmp_path / "unused")


def test_without_java_21_one_message_says_what_was_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stream.registry import dist

    java17 = Path("/usr/lib/jvm/java-17-openjdk-amd64")
    monkeypatch.setattr(dist, "JVM_DIRS", (tmp_path,))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(dist.JAVA_HOME_ENV, raising=False)
    if java17.is_dir():
        monkeypatch.setenv("JAVA_HOME", str(java17))
    else:
        monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(registry.RegistryPrerequisiteError, match=r"needs Java 21\+") as caught:
        registry.find_java()
    assert "STREAM_SCHEMA_REGISTRY_URL" in str(caught.value)
    if java17.is_dir():
        assert "(Java 17)" in str(caught.value)


def test_compose_registry_service_has_the_local_settings() -> None:
    import yaml

    compose = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text()
    )
    service = compose["services"]["registry"]
    assert service["image"] == f"apicurio/apicurio-registry:{registry.REGISTRY_VERSION}"
    env = service["environment"]
    assert env["APICURIO_RULES_GLOBAL_COMPATIBILITY"] == "BACKWARD"
    assert int(env["QUARKUS_MANAGEMENT_PORT"]) != 9000
    assert service["ports"] == [f"{registry.DEFAULT_PORT}:8080"]


# --- decoding ------------------------------------------------------------------------


def test_avro_written_by_confluent_serializer_decodes_to_json(
    registry_url: str, client: SchemaRegistryClient
) -> None:
    topic = unique_name("avro")
    serialize = AvroSerializer(client, V1)
    values = [serialize({"id": f"e{i}", "count": i}, ctx(topic)) for i in range(3)]
    out, rejects = make_decoder("avro", registry_url).decode_batch(topic, [*values, None])
    assert rejects == []
    assert decoded(out) == [
        {"id": "e0", "count": 0},
        {"id": "e1", "count": 1},
        {"id": "e2", "count": 2},
        None,
    ]


def test_avro_v1_records_read_with_v2_defaults(
    registry_url: str, client: SchemaRegistryClient
) -> None:
    topic = unique_name("evolve")
    decoder = make_decoder("avro", registry_url)
    old = AvroSerializer(client, V1)({"id": "old", "count": 1}, ctx(topic))
    assert decoded(decoder.decode_batch(topic, [old])[0]) == [{"id": "old", "count": 1}]
    new = AvroSerializer(client, V2)({"id": "new", "count": 2, "tag": "blue"}, ctx(topic))
    fresh = make_decoder("avro", registry_url)  # a worker started after v2 was registered
    out, rejects = fresh.decode_batch(topic, [old, new])
    assert rejects == []
    assert decoded(out) == [
        {"id": "old", "count": 1, "tag": "none"},  # v2's default filled in
        {"id": "new", "count": 2, "tag": "blue"},
    ]
    # The direct fastavro path gives what confluent-kafka's own deserializer gives.
    reference = AvroDeserializer(client, conf={"use.latest.version": True})
    assert decoded(out) == [reference(value, ctx(topic)) for value in (old, new)]


def test_avro_without_a_topic_subject_reads_with_the_writer_schema(
    registry_url: str, client: SchemaRegistryClient
) -> None:
    from confluent_kafka.schema_registry import record_subject_name_strategy

    serialize = AvroSerializer(
        client, V2, conf={"subject.name.strategy": record_subject_name_strategy}
    )
    topic = unique_name("by-record-name")
    value = serialize({"id": "r", "count": 7, "tag": "t"}, ctx(topic))
    out, rejects = make_decoder("avro", registry_url).decode_batch(topic, [value, value])
    assert rejects == []
    assert decoded(out) == [{"id": "r", "count": 7, "tag": "t"}] * 2


def test_avro_rejects_name_their_reason(registry_url: str, client: SchemaRegistryClient) -> None:
    topic = unique_name("avro-bad")
    good = AvroSerializer(client, V1)({"id": "a-rather-long-id", "count": 5}, ctx(topic))
    values: list[bytes | None] = [
        b'{"id": "plain json"}',  # no magic byte
        b"\x00\x00",  # too short for a header
        b"\x00" + (987_654).to_bytes(4, "big") + good[5:],  # an id the registry never issued
        good[:8],  # truncated payload
        good,
    ]
    out, rejects = make_decoder("avro", registry_url).decode_batch(topic, values)
    assert [(r.position, r.error_class) for r in rejects] == [
        (0, "bad_framing"),
        (1, "bad_framing"),
        (2, "unknown_schema"),
        (3, "undecodable"),
    ]
    assert "magic byte" in rejects[0].message
    assert "987654" in rejects[2].message
    assert out[:4] == [None] * 4
    assert decoded(out[4:]) == [{"id": "a-rather-long-id", "count": 5}]


def test_json_schema_decodes_and_checks_the_writer_schema(
    registry_url: str, client: SchemaRegistryClient
) -> None:
    topic = unique_name("jsonschema")
    good = JSONSerializer(JSON_SCHEMA, client)({"id": "j", "count": 3}, ctx(topic))
    header = good[:5]
    values: list[bytes | None] = [
        good,
        header + b'{"id": 5}',  # violates its writer schema
        header + b"{not json",
        b'{"id": "j"}',
        b"\x00" + (987_655).to_bytes(4, "big") + b"{}",
        None,
    ]
    out, rejects = make_decoder("json_schema", registry_url).decode_batch(topic, values)
    assert [(r.position, r.error_class) for r in rejects] == [
        (1, "undecodable"),
        (2, "undecodable"),
        (3, "bad_framing"),
        (4, "unknown_schema"),
    ]
    assert decoded(out) == [{"id": "j", "count": 3}, None, None, None, None, None]

    passthrough = make_decoder("json_schema", registry_url, validate_writer_schema=False)
    out, rejects = passthrough.decode_batch(topic, values)
    assert [(r.position, r.error_class) for r in rejects] == [
        (3, "bad_framing"),
        (4, "unknown_schema"),
    ]
    # The payload goes on untouched; the pipeline's validation judges it.
    assert out == [good[5:], b'{"id": 5}', b"{not json", None, None, None]


def test_protobuf_decodes_without_a_generated_class(registry_url: str) -> None:
    topic = unique_name("proto")
    proto = (
        'syntax = "proto3";\npackage demo;\n'
        "message Other { int32 x = 1; }\n"
        "message Event { string id = 1; int32 count = 2; repeated string tags = 3; }\n"
    )
    schema_id = _register_text(registry_url, f"{topic}-value", proto, "PROTOBUF")
    event_class = _message_class(
        "demo",
        "Event",
        [
            ("id", 1, descriptor_pb2.FieldDescriptorProto.TYPE_STRING, False),
            ("count", 2, descriptor_pb2.FieldDescriptorProto.TYPE_INT32, False),
            ("tags", 3, descriptor_pb2.FieldDescriptorProto.TYPE_STRING, True),
        ],
        preceding=["Other"],
    )
    payload = event_class(id="p", count=0, tags=["a", "b"]).SerializeToString()
    header = b"\x00" + schema_id.to_bytes(4, "big") + b"\x02\x02"  # message index path [1]
    values: list[bytes | None] = [header + payload, header + b"\xff\xff", b"\x00\x00\x00\x00\x00"]
    out, rejects = make_decoder("protobuf", registry_url).decode_batch(topic, values)
    assert decoded(out[:1]) == [{"id": "p", "count": 0, "tags": ["a", "b"]}]
    assert [(r.position, r.error_class) for r in rejects] == [
        (1, "undecodable"),
        (2, "bad_framing"),
    ]


def test_protobuf_schema_apicurio_mangles_is_compiled_from_its_text(
    registry_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Apicurio returns serialized descriptors as UTF-8 text, so one with bytes >= 0x80
    (here field number 200, a nested enum, a well-known import) comes from the .proto
    text through protoc instead; without grpcio-tools that is one clear ConfigError."""
    topic = unique_name("proto-big")
    proto = (
        'syntax = "proto3";\npackage demo;\nimport "google/protobuf/timestamp.proto";\n'
        "message Wide {\n  enum Level { LOW = 0; HIGH = 1; }\n  int32 far = 200;\n"
        "  Level level = 2;\n  google.protobuf.Timestamp at = 3;\n"
        "  map<string, int64> counts = 4;\n}\n"
    )
    schema_id = _register_text(registry_url, f"{topic}-value", proto, "PROTOBUF")
    payload = b"\xc0\x0c\x07" + b"\x10\x01" + b"\x1a\x02\x08\x3c" + b"\x22\x05\x0a\x01k\x10\x02"
    value = b"\x00" + schema_id.to_bytes(4, "big") + b"\x00" + payload
    out, rejects = make_decoder("protobuf", registry_url).decode_batch(topic, [value])
    assert rejects == []
    assert decoded(out) == [
        {"far": 7, "level": "HIGH", "at": "1970-01-01T00:01:00Z", "counts": {"k": "2"}}
    ]
    monkeypatch.setitem(sys.modules, "grpc_tools", None)  # as if the extra were not installed
    with pytest.raises(ConfigError, match=r"stream-processor\[protobuf\]"):
        make_decoder("protobuf", registry_url).decode_batch(topic, [value])


# --- encoding and compatibility --------------------------------------------------------


def test_encoder_registers_under_the_topic_subject_and_interoperates(
    registry_url: str, client: SchemaRegistryClient
) -> None:
    topic = unique_name("out")
    encoder = FormatEncoder("avro", registry_url, V2)
    value = encoder.encode(topic, {"id": "o", "count": 1, "tag": "x"})
    assert client.get_latest_version(f"{topic}-value").schema_id == int.from_bytes(
        value[1:5], "big"
    )
    assert AvroDeserializer(client)(value, ctx(topic)) == {"id": "o", "count": 1, "tag": "x"}
    out, rejects = make_decoder("avro", registry_url).decode_batch(topic, [value])
    assert rejects == [] and decoded(out) == [{"id": "o", "count": 1, "tag": "x"}]
    json_encoder = FormatEncoder("json_schema", registry_url, JSON_SCHEMA)
    json_value = json_encoder.encode(topic + "-j", {"id": "j"})
    assert decoded(
        make_decoder("json_schema", registry_url).decode_batch(topic + "-j", [json_value])[0]
    ) == [{"id": "j"}]
    with pytest.raises(ValueError, match="does not fit"):
        encoder.encode(topic, {"id": "missing count"})


def test_incompatible_v3_is_refused_with_the_registry_message(
    registry_url: str, client: SchemaRegistryClient
) -> None:
    topic = unique_name("compat")
    subject = f"{topic}-value"
    encoder = FormatEncoder("avro", registry_url, V1)
    encoder.check_compatible(topic)  # no subject yet: compatible with nothing registered
    encoder.encode(topic, {"id": "a", "count": 1})
    encoder.check_compatible(topic, V2)  # added field with a default: BACKWARD compatible
    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema(subject, Schema(V3_INCOMPATIBLE, "AVRO"))
    assert refused.value.http_status_code == 409
    with pytest.raises(ConfigError) as caught:
        encoder.check_compatible(topic, V3_INCOMPATIBLE)
    assert refused.value.error_message in str(caught.value)
    assert "owner" in str(caught.value)
    assert client.get_versions(subject) == [1]  # the check registered nothing


# --- the registry goes away and comes back (keep last: it restarts the registry) -------


def test_registry_down_is_transient_and_recovers(
    local_registry: LocalRegistry, client: SchemaRegistryClient, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = unique_name("outage")
    value = AvroSerializer(client, V1)({"id": "x", "count": 1}, ctx(topic))
    warm = make_decoder("avro", local_registry.url)
    assert warm.decode_batch(topic, [value])[1] == []

    where = ["--port", str(local_registry.port), "--home", str(local_registry.home)]
    assert stream_main(["registry", "stop", *where]) == 0
    assert f"stopped the registry at {local_registry.url}" in capsys.readouterr().out
    assert stream_main(["registry", "status", *where]) == 3
    cold = make_decoder("avro", local_registry.url)
    with pytest.raises(TransientError, match="unavailable"):
        cold.decode_batch(topic, [value])
    with pytest.raises(TransientError):
        make_decoder("json_schema", local_registry.url).decode_batch(topic, [value])
    with pytest.raises(TransientError):
        FormatEncoder("avro", local_registry.url, V2).check_compatible(topic)
    # Schemas already fetched keep decoding while the registry is away.
    assert decoded(warm.decode_batch(topic, [value])[0]) == [{"id": "x", "count": 1}]

    registry.start(local_registry.port, local_registry.home, app=local_registry.app)
    fresh_client = SchemaRegistryClient({"url": local_registry.url})  # storage is in memory
    again = AvroSerializer(fresh_client, V1)({"id": "y", "count": 2}, ctx(topic))
    out, rejects = cold.decode_batch(topic, [again])
    assert rejects == [] and decoded(out) == [{"id": "y", "count": 2}]


def _register_text(url: str, subject: str, schema: str, schema_type: str) -> int:
    body = json.dumps({"schema": schema, "schemaType": schema_type}).encode()
    request = urllib.request.Request(
        f"{url}/subjects/{subject}/versions",
        data=body,
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        schema_id: int = json.loads(answer.read())["id"]
    return schema_id


def _message_class(
    package: str, name: str, fields: list[tuple[str, int, int, bool]], preceding: list[str]
) -> Any:
    file_proto = descriptor_pb2.FileDescriptorProto(
        name=f"{unique_name('t')}.proto", package=package, syntax="proto3"
    )
    for other in preceding:
        file_proto.message_type.add(name=other)
    message = file_proto.message_type.add(name=name)
    for field_name, number, field_type, repeated in fields:
        message.field.add(
            name=field_name,
            number=number,
            type=field_type,  # type: ignore[arg-type]
            label=3 if repeated else 1,  # type: ignore[arg-type]
        )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{name}"))
