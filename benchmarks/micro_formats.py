"""Micro-benchmark of record decoding per value format (no Kafka): µs per record.

Writes ``--records`` events of the demo's shape (~200 bytes as JSON) once per format with
confluent-kafka's own serializers against a real schema registry, then times
``stream.formats`` decoders over batches of ``--batch`` values — output is JSON bytes,
what the JSON validation path reads — and prints microseconds per record by wall clock
and by this process's CPU time (the stable number on a shared machine), best of
``--rounds``. Reference rows show the floor: plain JSON (the identity decoder, and a
msgspec decode of the same JSON, which is what the validate stage does next), fastavro's
``schemaless_reader`` alone, and ``orjson.dumps`` of the decoded dict. The ``output``
rows time the other direction: the worker's output encoder (JSON values to Avro,
Protobuf, or JSON Schema after its check against the compiled schema).

The registry is ``$STREAM_SCHEMA_REGISTRY_URL`` if set, else the project's local one
(``stream.registry``) on a free port, stopped afterwards.

    PYTHONPATH=. python benchmarks/micro_formats.py --records 50000
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

warnings.filterwarnings("ignore", category=DeprecationWarning)

AVRO_SCHEMA = {
    "type": "record",
    "name": "Event",
    "namespace": "demo",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "source", "type": "string"},
        {"name": "type", "type": "string"},
        {"name": "severity", "type": "string"},
        {"name": "timestamp", "type": "string"},
        {"name": "value", "type": "double"},
        {"name": "message", "type": "string"},
        {"name": "attempt", "type": "int"},
    ],
}
JSON_SCHEMA = {
    "type": "object",
    "properties": {
        "event_id": {"type": "string"},
        "source": {"type": "string"},
        "type": {"type": "string", "enum": ["request", "deploy", "error"]},
        "severity": {"type": "string", "enum": ["info", "warning", "error", "critical"]},
        "timestamp": {"type": "string"},
        "value": {"type": "number"},
        "message": {"type": "string", "maxLength": 200},
        "attempt": {"type": "integer", "minimum": 0},
    },
    "required": ["event_id", "source", "type", "severity", "timestamp", "value"],
}
PROTO = """syntax = "proto3";
package demo;
message Event {
  string event_id = 1; string source = 2; string type = 3; string severity = 4;
  string timestamp = 5; double value = 6; string message = 7; int32 attempt = 8;
}
"""


def events(count: int) -> list[dict[str, Any]]:
    severities = ("info", "warning", "error", "critical")
    return [
        {
            "event_id": f"ev-{i:012d}",
            "source": f"svc-{i % 200:03d}",
            "type": ("request", "deploy", "error")[i % 3],
            "severity": severities[i % 4],
            "timestamp": f"2026-12-02T15:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}"
            f".{i % 1000:03d}Z",
            "value": (i % 997) * 1.5,
            "message": "upstream answered 503 after retries; circuit half-open",
            "attempt": i % 5,
        }
        for i in range(count)
    ]


@contextmanager
def registry_url() -> Iterator[str]:
    external = os.environ.get("STREAM_SCHEMA_REGISTRY_URL")
    if external:
        yield external
        return
    from stream import registry
    from stream.localbroker import free_port_pair

    app = registry.ensure_distribution()
    with tempfile.TemporaryDirectory(prefix="micro-formats-") as home:
        port = free_port_pair()
        began = time.monotonic()
        url = registry.start(port, home, app=app)
        print(f"# local registry {url} ready in {time.monotonic() - began:.1f}s", file=sys.stderr)
        try:
            yield url
        finally:
            registry.stop(port, home)


def timed(func: Callable[[], object], records: int, rounds: int) -> tuple[float, float]:
    """Best (wall, cpu) microseconds per record over ``rounds`` runs."""
    best_wall = best_cpu = float("inf")
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        func()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall / records * 1e6, best_cpu / records * 1e6


def batches(values: Sequence[bytes], size: int) -> list[Sequence[bytes]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if min(args.records, args.batch, args.rounds) <= 0:
        parser.error("--records, --batch and --rounds must be positive")

    import fastavro
    import msgspec
    import orjson
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.schema_registry.json_schema import JSONSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext
    from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

    from stream.formats import make_decoder

    records = events(args.records)
    plain = [orjson.dumps(record) for record in records]
    size = sum(map(len, plain)) / len(plain)
    rows: list[tuple[str, float, float, float]] = []  # name, wall, cpu, bytes/record

    def run(name: str, values: list[bytes], func: Callable[[Sequence[bytes]], object]) -> None:
        chunks = batches(values, args.batch)
        wall, cpu = timed(lambda: [func(chunk) for chunk in chunks], len(values), args.rounds)
        rows.append((name, wall, cpu, sum(map(len, values)) / len(values)))

    json_decoder = make_decoder("json", None)
    run("json (identity decoder)", plain, lambda c: json_decoder.decode_batch("t", c))
    structured = msgspec.json.Decoder(dict[str, Any])
    run("  ref: msgspec JSON decode", plain, lambda c: [structured.decode(v) for v in c])

    with registry_url() as url:
        client = SchemaRegistryClient({"url": url})
        stamp = time.time_ns()
        ctx = {
            f: SerializationContext(f"bench-{f}-{stamp}", MessageField.VALUE)
            for f in ("avro", "json_schema", "protobuf")
        }

        avro_ser = AvroSerializer(client, json.dumps(AVRO_SCHEMA))
        avro = [avro_ser(record, ctx["avro"]) for record in records]
        avro_decoder = make_decoder("avro", url)
        run("avro", avro, lambda c: avro_decoder.decode_batch(ctx["avro"].topic, c))
        parsed = fastavro.parse_schema(AVRO_SCHEMA)
        run(
            "  ref: fastavro schemaless_reader",
            avro,
            lambda c: [fastavro.schemaless_reader(io.BytesIO(v[5:]), parsed, None) for v in c],
        )
        run(
            "  ref: orjson.dumps of the dict",
            plain,
            lambda c: [orjson.dumps(r) for r in records[: len(c)]],
        )

        json_ser = JSONSerializer(json.dumps(JSON_SCHEMA), client)
        framed_json = [json_ser(record, ctx["json_schema"]) for record in records]
        js_decoder = make_decoder("json_schema", url)
        run(
            "json_schema (validates writer schema)",
            framed_json,
            lambda c: js_decoder.decode_batch(ctx["json_schema"].topic, c),
        )

        js_raw = make_decoder("json_schema", url, validate_writer_schema=False)
        run(
            "json_schema (validate_writer_schema=False)",
            framed_json,
            lambda c: js_raw.decode_batch(ctx["json_schema"].topic, c),
        )

        body = json.dumps({"schema": PROTO, "schemaType": "PROTOBUF"}).encode()
        request = urllib.request.Request(
            f"{url}/subjects/{ctx['protobuf'].topic}-value/versions",
            data=body,
            headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            proto_id = json.loads(answer.read())["id"]
        file_proto = descriptor_pb2.FileDescriptorProto(
            name="bench.proto", package="demo", syntax="proto3"
        )
        message = file_proto.message_type.add(name="Event")
        types = {"value": 1, "attempt": 5}  # TYPE_DOUBLE, TYPE_INT32; the rest strings (9)
        for number, field in enumerate(AVRO_SCHEMA["fields"], start=1):  # type: ignore[arg-type]
            message.field.add(
                name=field["name"], number=number, type=types.get(field["name"], 9), label=1
            )
        pool = descriptor_pool.DescriptorPool()
        pool.Add(file_proto)
        event_class = message_factory.GetMessageClass(pool.FindMessageTypeByName("demo.Event"))
        header = b"\x00" + proto_id.to_bytes(4, "big") + b"\x00"
        protos = [
            header + json_format.ParseDict(record, event_class()).SerializeToString()
            for record in records
        ]
        proto_decoder = make_decoder("protobuf", url)
        run(
            "protobuf (schema-less, MessageToDict)",
            protos,
            lambda c: proto_decoder.decode_batch(ctx["protobuf"].topic, c),
        )

        for name, decoder, values in (
            ("avro", avro_decoder, avro),
            ("json_schema", js_decoder, framed_json),
            ("protobuf", proto_decoder, protos),
        ):
            out, rejects = decoder.decode_batch(ctx[name].topic, values[:3])
            assert (
                not rejects and orjson.loads(out[0] or b"null")["event_id"] == "ev-000000000000"
            ), name

        # Output side: JSON values -> the output format (OutputEncoder.encode_records, what
        # the router calls per batch; a record the schema refuses would become a reject).
        from stream.formats.client import make_client
        from stream.formats.output import OutputEncoder

        for fmt, schema in (
            ("avro", json.dumps(AVRO_SCHEMA)),
            ("protobuf", PROTO),
            ("json_schema", json.dumps(JSON_SCHEMA)),
        ):
            topic = f"bench-out-{fmt}-{stamp}"
            out_encoder = OutputEncoder(fmt, url, make_client(url), {topic: schema}, "topic")
            out_encoder.register()
            encoded, refused = out_encoder.encode_records(topic, plain[:3])
            assert len(encoded) == 3 and not refused, (fmt, refused)
            run(
                f"output {fmt} (encode_records)",
                plain,
                lambda c, e=out_encoder, t=topic: e.encode_records(t, list(c)),
            )

    print(
        f"{args.records} records, batches of {args.batch}, best of {args.rounds}; "
        f"JSON {size:.0f} B/record"
    )
    print(f"{'format':40s} {'us/record wall':>15s} {'us/record cpu':>14s} {'bytes/record':>13s}")
    for name, wall, cpu, nbytes in rows:
        print(f"{name:40s} {wall:15.2f} {cpu:14.2f} {nbytes:13.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
