"""Record formats in a pipeline, end to end: a real broker, a real schema registry, real workers.

One Apicurio registry serves the module (started through :mod:`stream.registry` on a free
port, in-memory storage). Each test runs ``stream worker --config <pipeline file>`` with
``format:`` avro / protobuf / json_schema, writes its input with confluent-kafka's own
serializers and reads the outputs with confluent-kafka's own deserializers. Asserted:

* valid records enriched (a derived field) and written in the output format; correlation
  records too; invalid and badly framed records in the DLQ with ``bad_framing`` /
  ``unknown_schema`` / ``undecodable`` in ``dlq.error.class``;
* evolution: v1, then v2 (an added optional field with a default) registered while the
  worker runs and records of both interleaved in one partition: all processed, v1 records
  read with v2's default, no restart;
* an incompatible v3 refused by the registry, and a worker whose output schema is
  incompatible with its output subject failing start-up with the registry's message;
* Protobuf output read by confluent-kafka's own ProtobufDeserializer;
* records the output schema refuses (a derived value of the wrong type for the orders
  shape in Protobuf, attribute values of the wrong type for the bundled observability
  shape in Avro and in JSON Schema) in the
  DLQ with stage ``encode``, the field and the reason, the rest of their batches written
  and the worker running on: records in = enriched + DLQ;
* the registry stopped and restarted under a running worker: nothing lost or
  dead-lettered, the ``schema-registry`` breaker opens and closes. The registry runs with
  ``persistent=True`` (an H2 file), so after the restart it serves the same schemas
  under the same ids, as a production registry does.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from fastavro import parse_schema, schemaless_writer
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from stream import registry
from stream.formats.output import OUTPUT_SCHEMA_VIOLATION, protobuf_message_class
from stream.formats.pipeline import CORRELATION_PROTO
from stream.kafka import headers as h
from tests.support.pipeline import (
    REPO,
    PipelineTopics,
    WorkerProcess,
    committed_offsets,
    end_offsets,
    read_all,
    wait_until,
)
from tests.support.registry import LocalRegistry, running_registry

pytestmark = [pytest.mark.broker, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

T0 = 1_796_205_600_000  # 2026-12-02T10:00:00Z
HOUR = 3_600_000


@pytest.fixture(scope="module")
def local_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    yield from running_registry(tmp_path_factory, "formats-registry", persistent=True)


def client_for(url: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": url})


def ctx(topic: str) -> SerializationContext:
    return SerializationContext(topic, MessageField.VALUE)


def avro_record(full_name: str, fields: list[dict[str, Any]]) -> dict[str, Any]:
    namespace, name = full_name.rsplit(".", 1)
    return {"type": "record", "name": name, "namespace": namespace, "fields": fields}


def avro_order(*extra: dict[str, Any], name: str = "Order") -> str:
    fields = [
        {"name": "order_id", "type": "string"},
        {"name": "customer", "type": "string"},
        {"name": "amount", "type": "double"},
        {"name": "created_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        *extra,
    ]
    return json.dumps(avro_record(f"shop.{name}", fields))


V1 = avro_order()
V2 = avro_order({"name": "tag", "type": "string", "default": "v2-default"})
V3_INCOMPATIBLE = avro_order({"name": "owner", "type": "string"})  # no default: not BACKWARD
#: The enriched records in Avro: the input, event_time_ms and the derived field.
ENRICHED_AVRO = avro_record(
    "shop.EnrichedOrder",
    [
        {"name": "order_id", "type": "string"},
        {"name": "customer", "type": "string"},
        {"name": "amount", "type": "double"},
        {"name": "created_at", "type": "string"},
        {"name": "tag", "type": "string", "default": "out-default"},
        {"name": "event_time_ms", "type": "long"},
        {
            "name": "enrichment",
            "type": {
                "type": "record",
                "name": "Enrichment",
                "fields": [{"name": "double_amount", "type": ["null", "double"]}],
            },
        },
    ],
)
JSON_ORDER = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "minLength": 1},
        "customer": {"type": "string"},
        "amount": {"type": "number", "minimum": 0},
        "created_at": {"type": "string", "format": "date-time"},
    },
    "required": ["order_id", "customer", "amount", "created_at"],
}
PROTO_ORDER = (
    'syntax = "proto3";\npackage shop;\n'
    "message Order { string order_id = 1; string customer = 2; double amount = 3; "
    "string created_at = 4; }\n"
)


ENRICHED_PROTO = """syntax = "proto3";
package shop;

message EnrichedOrder {
  string order_id = 1;
  string customer = 2;
  double amount = 3;
  string created_at = 4;
  int64 event_time_ms = 5;
  message Enrichment { double double_amount = 1; }
  Enrichment enrichment = 6;
}
"""
#: The bundled pipeline's enriched events in Avro (no reference data: team, tier, owner null).
ENRICHED_EVENT_AVRO = avro_record(
    "obs.EnrichedEvent",
    [
        {"name": "event_id", "type": "string"},
        {"name": "type", "type": "string"},
        {"name": "source", "type": "string"},
        {"name": "timestamp", "type": ["long", "string"]},
        {"name": "severity", "type": "string"},
        {"name": "attributes", "type": ["null", {"type": "map", "values": "string"}]},
        {"name": "event_time_ms", "type": "long"},
        {
            "name": "enrichment",
            "type": {
                "type": "record",
                "name": "Enrichment",
                "fields": [
                    {"name": "known_service", "type": "boolean"},
                    {"name": "team", "type": ["null", "string"], "default": None},
                    {"name": "tier", "type": ["null", "long"], "default": None},
                    {"name": "owner", "type": ["null", "string"], "default": None},
                    {"name": "score", "type": "double"},
                ],
            },
        },
    ],
)

#: The same in JSON Schema: attribute values strings only.
ENRICHED_EVENT_JSON_SCHEMA = {
    "type": "object",
    "properties": {
        "event_id": {"type": "string"},
        "source": {"type": "string"},
        "attributes": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
        "event_time_ms": {"type": "integer"},
        "enrichment": {"type": "object"},
    },
    "required": ["event_id", "source", "event_time_ms", "enrichment"],
}


def write_json(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc))
    return path


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def order(n: int, t: int) -> dict[str, Any]:
    return {"order_id": f"o{n}", "customer": f"c{n % 3}", "amount": float(n), "created_at": t}


def write_pipeline(topics: PipelineTopics, directory: Path, url: str, **formats: Any) -> Path:
    spec: dict[str, Any] = {
        "pipeline": "orders-formats",
        "topics": {
            "input": topics.input,
            "enriched": topics.enriched,
            "correlations": topics.correlations,
            "dlq": topics.dlq,
        },
        "event_id": "order_id",
        "event_time": {"field": "created_at"},
        "key": "customer",
        "schema_registry": {"url": url, "latest_ttl": "1s", "recovery_timeout": "2s"},
        "derive": {"double_amount": "double(amount) * 2.0"},
        "correlate": {
            "rules": [
                {
                    "name": "orders-per-customer",
                    "kind": "threshold",
                    "group_by": ["customer"],
                    "window": {"type": "tumbling", "size": "10m"},
                    "aggregate": "count",
                    "when": ">= 1",
                }
            ]
        },
        **formats,
    }
    if spec.get("output_format") == "avro":
        (directory / "enriched.avsc").write_text(json.dumps(ENRICHED_AVRO))
        spec["output_schema_file"] = "enriched.avsc"
    path = directory / f"{topics.prefix}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def produce(bootstrap: str, topic: str, values: list[bytes], partition: int = 0) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for value in values:
        producer.produce(topic, value, partition=partition)
    assert producer.flush(60) == 0


def drained(bootstrap: str, topics: PipelineTopics) -> bool:
    return committed_offsets(bootstrap, topics.group, topics.input) == end_offsets(
        bootstrap, topics.input
    )


def wait_drained(bootstrap: str, topics: PipelineTopics, worker: WorkerProcess) -> None:
    def done() -> bool:
        assert worker.proc.poll() is None, worker.log()
        return drained(bootstrap, topics)

    wait_until(done, timeout=90, message="input committed to its end")


@contextmanager
def running_worker(topics: PipelineTopics, home: Path, pipeline: Path) -> Iterator[WorkerProcess]:
    """A ready ``stream worker --config pipeline``; it must stop cleanly afterwards."""
    worker = WorkerProcess(topics, home, args=["--config", str(pipeline)])
    try:
        worker.wait_ready()
        yield worker
    finally:
        assert worker.stop() == 0, worker.log()


def window_count(correlations: list[Any]) -> int:
    """Events counted by the correlations of the test's hour (the closer opens the next)."""
    return sum(int(c["count"]) for c in correlations if int(c["window_start"]) < T0 + HOUR)


def bad_values(schema_id: int, payload: bytes) -> list[bytes]:
    """bad_framing, unknown_schema, undecodable (in that order)."""
    return [
        b'{"order_id": "plain json"}',
        b"\x00" + (987_654).to_bytes(4, "big") + payload,
        b"\x00" + schema_id.to_bytes(4, "big") + b"\xff\xff\xff",
    ]


def transitions(worker: WorkerProcess, to_state: str) -> float:
    _status, body = worker.get("/metrics")
    pattern = (
        r'^stream_circuit_breaker_transitions_total\{breaker="schema-registry",'
        rf'to_state="{to_state}"\}} (\S+)$'
    )
    found = re.search(pattern, body.decode(), re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def closer(n: int) -> dict[str, Any]:
    """An order an hour later: moves the watermark past every window of the test."""
    return order(n, T0 + HOUR)


@dataclass
class Case:
    """One test's world: a broker, the registry, fresh topics (one partition), a home."""

    bootstrap: str
    registry: LocalRegistry
    home: Path
    topics: PipelineTopics
    client: SchemaRegistryClient

    @property
    def url(self) -> str:
        return self.registry.url

    @property
    def subject(self) -> str:
        """The input topic's subject (TopicNameStrategy)."""
        return f"{self.topics.input}-value"

    def pipeline(self, **formats: Any) -> Path:
        return write_pipeline(self.topics, self.home, self.url, **formats)

    def worker(self, pipeline: Path) -> AbstractContextManager[WorkerProcess]:
        return running_worker(self.topics, self.home, pipeline)

    def process(self, pipeline: Path, values: list[bytes]) -> None:
        """Run a worker over ``values`` until the input is committed to its end."""
        with self.worker(pipeline) as worker:
            self.produce(values, worker)

    def produce(self, values: list[bytes], worker: WorkerProcess) -> None:
        produce(self.bootstrap, self.topics.input, values)
        wait_drained(self.bootstrap, self.topics, worker)

    def read(self, topic: str, read: Callable[..., Any]) -> list[Any]:
        """Every value of ``topic``, read with a confluent-kafka deserializer."""
        return [read(m.value(), ctx(topic)) for m in read_all(self.bootstrap, topic)]

    def dlq(self) -> list[Any]:
        return read_all(self.bootstrap, self.topics.dlq)

    def dlq_classes(self) -> Counter[str]:
        return Counter(
            (h.header_value(m.headers() or [], h.DLQ_ERROR_CLASS) or b"").decode()
            for m in self.dlq()
        )


@pytest.fixture
def case(kafka_bootstrap: str, local_registry: LocalRegistry, tmp_path: Path) -> Case:
    topics = PipelineTopics(kafka_bootstrap, partitions=1).create()
    return Case(kafka_bootstrap, local_registry, tmp_path, topics, client_for(local_registry.url))


# -- the registry goes away under a running worker ---------------------------------------------


def test_registry_outage_pauses_and_resumes_without_losing_records(case: Case) -> None:
    local, topics, client = case.registry, case.topics, case.client
    other = f"{topics.prefix}-other-value"
    v2_writer = avro_order({"name": "note", "type": "string", "default": ""})
    ids = [
        client.register_schema(case.subject, Schema(V1, "AVRO")),
        client.register_schema(other, Schema(v2_writer, "AVRO")),
    ]
    pipeline = case.pipeline(format="avro", schema={"registry_subject": case.subject})
    v1 = AvroSerializer(
        client, V1, conf={"auto.register.schemas": False, "use.latest.version": True}
    )
    header2 = b"\x00" + ids[1].to_bytes(4, "big")

    def v2_value(n: int) -> bytes:
        buffer = BytesIO()
        buffer.write(header2)
        schemaless_writer(
            buffer, parse_schema(json.loads(v2_writer)), {**order(n, T0 + n), "note": "x"}
        )
        return buffer.getvalue()

    before = [v1(order(n, T0 + n), ctx(topics.input)) for n in range(20)]
    during = [v2_value(n) for n in range(20, 60)]

    with case.worker(pipeline) as worker:
        case.produce(before, worker)

        registry.stop(local.port, local.home)
        produce(case.bootstrap, topics.input, during)  # a writer schema the worker never saw
        wait_until(lambda: transitions(worker, "open") >= 1, timeout=60, message="breaker opened")
        assert not drained(case.bootstrap, topics)
        assert case.dlq() == []

        registry.start(local.port, local.home, app=local.app, persistent=True)
        kept = client_for(case.url).get_schema(ids[1]).schema_str  # kept on disk
        assert json.loads(kept) == json.loads(v2_writer)
        wait_drained(case.bootstrap, topics, worker)
        assert transitions(worker, "closed") >= 1

    assert case.dlq() == []
    enriched = case.read(topics.enriched, lambda value, _ctx: orjson.loads(value))
    assert sorted(e["order_id"] for e in enriched) == sorted(f"o{n}" for n in range(60))
    assert "breaker 'schema-registry': closed -> open" in worker.log_path.read_text()


# -- each format end to end ------------------------------------------------------------------


def test_avro_end_to_end_with_evolution_in_one_partition(case: Case) -> None:
    topics, client = case.topics, case.client
    pipeline = case.pipeline(
        format="avro", schema={"registry_subject": case.subject}, output_format="avro"
    )
    c = ctx(topics.input)
    write_v1 = AvroSerializer(client, V1)
    write_v2 = AvroSerializer(client, V2)
    first = [write_v1(order(n, T0 + n * 1000), c) for n in range(30)]
    v1_id = int.from_bytes(first[0][1:5], "big")
    bad = bad_values(v1_id, first[0][5:])

    with case.worker(pipeline) as worker:
        case.produce(first + bad, worker)

        # v2 while the worker runs: BACKWARD-compatible, read as soon as latest_ttl (1 s) passes.
        assert client.register_schema(case.subject, Schema(V2, "AVRO")) > v1_id
        with pytest.raises(SchemaRegistryError) as refused:
            client.register_schema(case.subject, Schema(V3_INCOMPATIBLE, "AVRO"))
        assert refused.value.http_status_code == 409
        time.sleep(1.5)
        mixed = []
        for n in range(30, 90):
            if n % 2:
                mixed.append(write_v2({**order(n, T0 + n * 1000), "tag": f"t{n}"}, c))
            else:
                mixed.append(write_v1(order(n, T0 + n * 1000), c))
        mixed.append(write_v2({**closer(999), "tag": "closer"}, c))
        case.produce(mixed, worker)

    read = AvroDeserializer(client)
    enriched = {}
    for m in read_all(case.bootstrap, topics.enriched):
        record = read(m.value(), ctx(topics.enriched))
        enriched[record["order_id"]] = (record, m.key())
    assert len(enriched) == 91
    for n in range(90):
        record, key = enriched[f"o{n}"]
        assert record["enrichment"]["double_amount"] == 2.0 * n
        assert record["event_time_ms"] == T0 + n * 1000
        assert key == f"c{n % 3}".encode()
        # Before v2: no tag in the input, the output schema's default. After: v2's default
        # for v1 records (read with the latest version), their own for v2 records.
        expected = "out-default" if n < 30 else f"t{n}" if n % 2 else "v2-default"
        assert record["tag"] == expected, (n, record)
    assert case.dlq_classes() == Counter({"bad_framing": 1, "unknown_schema": 1, "undecodable": 1})
    correlations = case.read(topics.correlations, read)
    assert correlations and {c["rule"] for c in correlations} == {"orders-per-customer"}
    assert window_count(correlations) == 90


def test_json_schema_end_to_end(case: Case) -> None:
    topics, client = case.topics, case.client
    pipeline = case.pipeline(
        format="json_schema",
        schema={"registry_subject": case.subject},
        output_format="json_schema",
        schema_registry={"url": case.url, "latest_ttl": "1s", "validate_writer_schema": True},
    )
    c = ctx(topics.input)
    write = JSONSerializer(json.dumps(JSON_ORDER), client)
    good = [write({**order(n, 0), "created_at": iso(T0 + n * 1000)}, c) for n in range(40)]
    good.append(write({**closer(999), "created_at": iso(T0 + HOUR)}, c))
    schema_id = int.from_bytes(good[0][1:5], "big")
    violating = b"\x00" + schema_id.to_bytes(4, "big") + b'{"order_id": "neg", "amount": -1}'
    bad = [*bad_values(schema_id, good[0][5:])[:2], violating]

    case.process(pipeline, good + bad)

    read = JSONDeserializer(None, schema_registry_client=client)
    enriched = case.read(topics.enriched, read)
    assert len(enriched) == 41
    by_id = {e["order_id"]: e for e in enriched}
    for n in range(40):
        assert by_id[f"o{n}"]["enrichment"] == {"double_amount": 2.0 * n}
        assert by_id[f"o{n}"]["event_time_ms"] == T0 + n * 1000
    output_schema = client.get_latest_version(f"{topics.enriched}-value").schema
    assert output_schema.schema_type == "JSON"
    assert "enrichment" in json.loads(output_schema.schema_str)["properties"]
    assert case.dlq_classes() == Counter({"bad_framing": 1, "unknown_schema": 1, "undecodable": 1})
    assert window_count(case.read(topics.correlations, read)) == 40


def _proto_class() -> Any:
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="shop_order_test.proto", package="shop", syntax="proto3"
    )
    message = file_proto.message_type.add(name="Order")
    string, double = (
        descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE,
    )
    for number, (name, kind) in enumerate(
        [("order_id", string), ("customer", string), ("amount", double), ("created_at", string)],
        start=1,
    ):
        message.field.add(name=name, number=number, type=kind, label=1)  # type: ignore[arg-type]
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.Order"))


def test_protobuf_end_to_end(case: Case) -> None:
    topics, client = case.topics, case.client
    schema_id = client.register_schema(case.subject, Schema(PROTO_ORDER, "PROTOBUF"))
    inline = {
        "order_id": {"type": "string", "required": True, "min_length": 1},
        "customer": {"type": "string", "required": True},
        "amount": {"type": "number", "required": True},
        "created_at": {"type": "string", "format": "date-time", "required": True},
    }
    pipeline = case.pipeline(format="protobuf", schema=inline, output_format="avro")
    message = _proto_class()
    header = b"\x00" + schema_id.to_bytes(4, "big") + b"\x00"  # message index path [0]

    def framed(body: dict[str, Any]) -> bytes:
        return header + message(**body).SerializeToString()

    good = [framed({**order(n, 0), "created_at": iso(T0 + n * 1000)}) for n in range(40)]
    good.append(framed({**closer(999), "created_at": iso(T0 + HOUR)}))
    invalid = framed({**order(7, 0), "order_id": "", "created_at": iso(T0)})  # minLength 1
    bad = [*bad_values(schema_id, good[0][6:])[:2], header + b"\xff\xff", invalid]

    case.process(pipeline, good + bad)

    read = AvroDeserializer(client)
    enriched = {r["order_id"]: r for r in case.read(topics.enriched, read)}
    assert len(enriched) == 41
    for n in range(40):
        assert enriched[f"o{n}"]["enrichment"] == {"double_amount": 2.0 * n}
        assert enriched[f"o{n}"]["created_at"] == iso(T0 + n * 1000)
    assert case.dlq_classes() == Counter(
        {"bad_framing": 1, "unknown_schema": 1, "undecodable": 1, "schema_violation": 1}
    )


# -- records the output schema refuses: to the DLQ, the worker goes on -------------------------


def encode_rejects(case: Case) -> dict[str, str]:
    """The DLQ's ``encode`` records: their input value (JSON) -> ``dlq.error.message``."""
    found = {}
    for m in case.dlq():
        headers = m.headers() or []
        assert h.header_value(headers, h.DLQ_STAGE) == b"encode"
        assert h.header_value(headers, h.DLQ_ERROR_CLASS) == OUTPUT_SCHEMA_VIOLATION.encode()
        found[m.value().decode()] = (h.header_value(headers, h.DLQ_ERROR_MESSAGE) or b"").decode()
    return found


def test_protobuf_output_read_by_confluent_and_wrong_derived_values_dead_lettered(
    case: Case,
) -> None:
    """The orders shape, plain JSON in, Protobuf out; a derived value of the wrong type
    (text where the .proto says double) on large orders."""
    topics = case.topics
    (case.home / "enriched.proto").write_text(ENRICHED_PROTO)
    pipeline = case.pipeline(
        schema_file=str(write_json(case.home / "order.schema.json", JSON_ORDER)),
        derive={"double_amount": "amount >= 30.0 ? 'too large' : double(amount) * 2.0"},
        output_format="protobuf",
        output_schema_file="enriched.proto",
    )
    orders = [{**order(n, 0), "created_at": iso(T0 + n * 1000)} for n in range(40)]
    orders.append({**closer(999), "amount": 1.0, "created_at": iso(T0 + HOUR)})
    case.process(pipeline, [orjson.dumps(o) for o in orders])

    conf = {"use.deprecated.format": False}
    read = ProtobufDeserializer(protobuf_message_class(ENRICHED_PROTO, "test"), conf)
    enriched = {r.order_id: r for r in case.read(topics.enriched, read)}
    rejected = encode_rejects(case)
    assert len(enriched) + len(rejected) == len(orders)  # in = out + DLQ
    assert sorted(enriched) == sorted([f"o{n}" for n in range(30)] + ["o999"])
    for n in range(30):
        record = enriched[f"o{n}"]
        assert record.enrichment.double_amount == 2.0 * n
        assert (record.event_time_ms, record.customer) == (T0 + n * 1000, f"c{n % 3}")
    assert sorted(orjson.loads(v)["order_id"] for v in rejected) == [f"o{n}" for n in range(30, 40)]
    for message in rejected.values():
        assert "double_amount" in message and "too large" in message, message
    read_correlation = ProtobufDeserializer(protobuf_message_class(CORRELATION_PROTO, "t"), conf)
    correlations = case.read(topics.correlations, read_correlation)
    counted = sum(c.count for c in correlations if c.window_start < T0 + HOUR)
    assert counted == 40  # correlated before encoding: the rejects are counted too
    assert {c.rule for c in correlations} == {"orders-per-customer"}


@pytest.mark.parametrize("fmt", ["avro", "json_schema"])
def test_observability_events_the_output_schema_refuses_are_dead_lettered(
    case: Case, fmt: str
) -> None:
    """The bundled observability shape (a pipeline file without a schema of its own), plain
    JSON in, Avro or JSON Schema out: attribute values may be numbers in the input, the
    output schema's map takes only strings."""
    topics = case.topics
    schema_file = {"avro": "enriched-events.avsc", "json_schema": "enriched-events.json"}[fmt]
    write_json(
        case.home / schema_file,
        ENRICHED_EVENT_AVRO if fmt == "avro" else ENRICHED_EVENT_JSON_SCHEMA,
    )
    pipeline = case.home / f"observability-{fmt}.yaml"
    spec = {
        "pipeline": f"observability-{fmt}",
        "schema_registry": {"url": case.url},
        "output_format": fmt,
        "output_schema_file": schema_file,
    }
    pipeline.write_text(yaml.safe_dump(spec))
    events = [
        {
            "event_id": f"e{n}",
            "type": "request",
            "source": f"svc-{n % 2}",
            "timestamp": T0 + n,
            "severity": "error" if n % 3 else "info",
            "attributes": {"retries": n} if n % 5 == 0 else {"region": "eu"},
        }
        for n in range(50)
    ]
    case.process(pipeline, [orjson.dumps(e) for e in events])

    if fmt == "avro":
        read: Callable[..., Any] = AvroDeserializer(case.client)
    else:
        read = JSONDeserializer(None, schema_registry_client=case.client)
    enriched = {r["event_id"]: r for r in case.read(topics.enriched, read)}
    rejected = encode_rejects(case)
    assert len(enriched) + len(rejected) == len(events)
    assert sorted(orjson.loads(v)["event_id"] for v in rejected) == sorted(
        f"e{n}" for n in range(0, 50, 5)
    )
    # the field; Avro's reason shows the value, msgspec's the path (``$.attributes[...]``)
    shown = "retries" if fmt == "avro" else "$.attributes"
    for message in rejected.values():
        assert "attributes" in message and shown in message, message
    assert enriched["e1"]["attributes"] == {"region": "eu"}
    assert enriched["e1"]["enrichment"]["score"] == 4.0  # error x untiered (unknown service)


# -- an incompatible output schema stops the worker at start-up -------------------------------


def test_incompatible_output_schema_fails_start_up_with_the_registry_message(case: Case) -> None:
    topics, client = case.topics, case.client
    client.register_schema(case.subject, Schema(V1, "AVRO"))
    client.register_schema(f"{topics.enriched}-value", Schema(json.dumps(ENRICHED_AVRO), "AVRO"))
    pipeline = case.pipeline(
        format="avro", schema={"registry_subject": case.subject}, output_format="avro"
    )
    incompatible = dict(ENRICHED_AVRO)
    incompatible["fields"] = [*ENRICHED_AVRO["fields"], {"name": "region", "type": "string"}]  # type: ignore[list-item]
    write_json(case.home / "enriched.avsc", incompatible)
    result = subprocess.run(
        [sys.executable, "-m", "stream.cli", "worker", "--config", str(pipeline)],
        env=topics.env(PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert f"output schema for subject '{topics.enriched}-value'" in result.stderr
    assert "the registry refused it" in result.stderr and "region" in result.stderr
    assert client.get_versions(f"{topics.enriched}-value") == [1]


# -- the load generator's formats ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["avro", "protobuf", "json_schema"])
def test_loadgen_registers_and_frames_its_events(
    kafka_bootstrap: str, local_registry: LocalRegistry, fmt: str
) -> None:
    from stream.cli import main as stream_main
    from stream.formats import make_decoder
    from stream.loadgen import generate

    topic = f"loadgen-{fmt}-{time.time_ns()}"
    argv = ["loadgen", "--bootstrap-servers", kafka_bootstrap, "--topic", topic]
    argv += ["--count", "300", "--partitions", "1", "--format", fmt, "--no-progress"]
    argv += ["--registry-url", local_registry.url, "--start-time", str(T0)]
    argv += ["--invalid-ratio", "0.05"]
    assert stream_main(argv) == 0
    records = read_all(kafka_bootstrap, topic)
    expected = list(generate(300, start_ms=T0, invalid_ratio=0.05))
    assert len(records) == 300
    decoder = make_decoder(fmt, local_registry.url, validate_writer_schema=False)
    out, rejects = decoder.decode_batch(topic, [m.value() for m in records])
    rejected = {r.position for r in rejects}
    assert {r.error_class for r in rejects} <= {"bad_framing"}
    by_id = {}
    for value in out:
        try:  # json_schema passes invalid (not even JSON) payloads on for validation to refuse
            event = orjson.loads(value or b"null")
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict) and "event_id" in event:
            by_id[event["event_id"]] = event
    for i, truth in enumerate(expected):
        if truth.valid:
            assert i not in rejected
            event = by_id[truth.event_id]
            source = orjson.loads(truth.value)
            assert (event["source"], event["severity"]) == (source["source"], source["severity"])
    subject = client_for(local_registry.url).get_latest_version(f"{topic}-value")
    assert subject.schema.schema_type == {"avro": "AVRO", "protobuf": "PROTOBUF"}.get(fmt, "JSON")
