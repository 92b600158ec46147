"""``stream ingest --http``: POST /events -> validated events on the input topic.

Contract (README "HTTP ingest")::

    POST /events   Content-Type: application/json      one event object, or an array of them
                   anything else (application/x-ndjson) one event per line, blank lines skipped
      202 {"accepted": n, "rejected": m, "errors": [{"line"|"index": i, "error_class", "message"}]}
      400 body empty or not JSON (array form); 401 missing/wrong bearer token
      413 body larger than --max-body-bytes
      429 + Retry-After: more than --max-pending events await acknowledgement
      503 the broker did not acknowledge in time / delivery failed (retry the request)
    GET /health, GET /metrics (Prometheus)

Why 202 only after the broker acknowledged: a client that gets 202 may
discard its copy, so the events must already be durable in Kafka. Each
request waits for *its* records' delivery reports; the reports are served by
one task polling the producer on the event loop, so no thread touches the
per-request counters. Rejected lines are answered to the client, which still
holds them, and are not written to the DLQ (the DLQ is for records nobody
else has); they are counted in ``stream_events_rejected_total{stage="ingest"}``.

429 is decided *before* anything of the request is produced, so a client
that retries after ``Retry-After`` never creates duplicates. A 503 after a
partial delivery failure may duplicate on retry; ``event_id`` identifies them
(the PostgreSQL sink is idempotent by it).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from aiohttp import web
from confluent_kafka import KafkaError, Message, Producer
from prometheus_client import generate_latest

from connectors.dlq import INGEST_STAGE
from connectors.json_source import split_lines
from connectors.keys import DEFAULT_KEY, event_keys
from stream.kafka.client import client_config
from stream.kafka.producer import PRODUCER_DEFAULTS
from stream.observability import metrics
from stream.stages.validate import Validator

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS: Final = 1
_raw_array: Final = msgspec.json.Decoder(list[msgspec.Raw])


@dataclass(frozen=True)
class HttpIngestOptions:
    topic: str
    host: str = "0.0.0.0"
    port: int = 8080
    #: Bearer token required on POST /events; ``None`` leaves the endpoint open.
    token: str | None = None
    max_body_bytes: int = 10 * 1024 * 1024
    #: Events produced but not yet acknowledged before new requests get 429.
    max_pending: int = 200_000
    key: str = DEFAULT_KEY
    ack_timeout: float = 30.0
    #: Per-line errors listed in one response (the counts are always complete).
    max_errors_listed: int = 100
    #: On SIGTERM: how long requests in flight may take to finish.
    shutdown_timeout: float = 20.0


class Ticket:
    """Delivery reports of one request's records; ``future`` resolves when all are in."""

    __slots__ = ("failed", "first_error", "future", "remaining")

    def __init__(self, count: int, future: asyncio.Future[None]) -> None:
        self.remaining = count
        self.failed = 0
        self.first_error: str | None = None
        self.future = future
        if count == 0:
            future.set_result(None)

    def on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.failed += 1
            if self.first_error is None:
                self.first_error = err.str()
        self.remaining -= 1
        if self.remaining == 0 and not self.future.done():
            self.future.set_result(None)


class AckedProducer:
    """A producer whose delivery reports resolve per-request tickets on the event loop."""

    def __init__(self, conf: dict[str, str], max_pending: int) -> None:
        overrides: dict[str, Any] = dict(PRODUCER_DEFAULTS)
        overrides.update({k: v for k, v in conf.items() if k in PRODUCER_DEFAULTS})
        overrides["queue.buffering.max.messages"] = max(max_pending * 2, 100_000)
        self._producer = Producer(client_config(conf, **overrides))
        self._closing = False

    @property
    def pending(self) -> int:
        """Records queued or in flight (not acknowledged yet)."""
        return len(self._producer)

    def send(self, topic: str, values: Sequence[bytes], keys: Sequence[bytes | None]) -> Ticket:
        ticket = Ticket(len(values), asyncio.get_running_loop().create_future())
        produce = self._producer.produce
        callback = ticket.on_delivery
        for value, key in zip(values, keys, strict=True):
            while True:
                try:
                    produce(topic, value, key, on_delivery=callback)
                    break
                except BufferError:
                    self._producer.poll(0.01)
        return ticket

    async def serve_delivery_reports(self) -> None:
        """Poll for delivery reports until closed; fast while anything is in flight."""
        while not self._closing:
            self._producer.poll(0)
            await asyncio.sleep(0.001 if len(self._producer) else 0.02)

    def close(self, timeout: float) -> int:
        """Flush (serving the last reports) and stop polling; returns records left unsent."""
        self._closing = True
        return int(self._producer.flush(timeout))


@dataclass
class HttpStats:
    requests: int = 0
    accepted: int = 0
    rejected: int = 0
    throttled: int = 0


class IngestHandler:
    """The aiohttp handlers; one instance per server."""

    def __init__(
        self, producer: AckedProducer, validator: Validator, options: HttpIngestOptions
    ) -> None:
        self._producer = producer
        self._validator = validator
        self._options = options
        self._expected_auth = f"Bearer {options.token}".encode() if options.token else None
        self._produced = metrics.events_produced_total.labels(options.topic)
        self.stats = HttpStats()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self._options.max_body_bytes)
        app.router.add_post("/events", self.post_events)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        return app

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "pending": self._producer.pending})

    async def metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(metrics.REGISTRY)
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    def _authorized(self, request: web.Request) -> bool:
        if self._expected_auth is None:
            return True
        given = request.headers.get("Authorization", "").encode()
        return hmac.compare_digest(given, self._expected_auth)

    async def post_events(self, request: web.Request) -> web.Response:
        opts = self._options
        self.stats.requests += 1
        if not self._authorized(request):
            return web.json_response(
                {"error": "missing or wrong bearer token"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="stream-ingest"'},
            )
        too_large = {"error": f"request body is larger than {opts.max_body_bytes} bytes"}
        length = request.content_length
        if length is not None and length > opts.max_body_bytes:
            return web.json_response(too_large, status=413)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response(too_large, status=413)
        try:
            values, locations, location_key = _split_body(body, request.content_type)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if not values:
            return web.json_response({"error": "the request has no events"}, status=400)
        result = self._validator.validate(values)
        events = result.events
        if len(events) > opts.max_pending:
            return web.json_response(
                {"error": f"more than {opts.max_pending} events in one request; split it"},
                status=413,
            )
        if events and self._producer.pending + len(events) > opts.max_pending:
            self.stats.throttled += 1
            return web.json_response(
                {"error": "too many events awaiting acknowledgement; retry later"},
                status=429,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        good = values if not result.rejects else [values[i] for i in result.indices]
        ticket = self._producer.send(opts.topic, good, event_keys(events, opts.key))
        try:
            await asyncio.wait_for(asyncio.shield(ticket.future), opts.ack_timeout)
        except TimeoutError:
            return web.json_response(
                {"error": f"the broker did not acknowledge within {opts.ack_timeout:.0f}s"},
                status=503,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        if ticket.failed:
            return web.json_response(
                {
                    "error": f"{ticket.failed} of {len(events)} events failed delivery: "
                    f"{ticket.first_error}",
                    "accepted": len(events) - ticket.failed,
                },
                status=503,
            )
        self._count(len(events), result.rejects)
        errors = [
            {
                location_key: locations[r.position],
                "error_class": r.error_class,
                "message": r.message,
            }
            for r in result.rejects[: opts.max_errors_listed]
        ]
        response: dict[str, Any] = {
            "accepted": len(events),
            "rejected": len(result.rejects),
            "errors": errors,
        }
        if len(result.rejects) > len(errors):
            response["errors_truncated"] = True
        return web.json_response(response, status=202)

    def _count(self, accepted: int, rejects: Sequence[Any]) -> None:
        self.stats.accepted += accepted
        self.stats.rejected += len(rejects)
        if accepted:
            self._produced.inc(accepted)
        counts: dict[str, int] = {}
        for reject in rejects:
            counts[reject.error_class] = counts.get(reject.error_class, 0) + 1
        for error_class, count in counts.items():
            metrics.events_rejected_total.labels(stage=INGEST_STAGE, error_class=error_class).inc(
                count
            )


def _split_body(body: bytes, content_type: str) -> tuple[list[bytes], Sequence[int], str]:
    """Event values, their locations, and what the location is called (``line``/``index``)."""
    if content_type == "application/json":
        stripped = body.strip()
        if stripped.startswith(b"["):
            try:
                elements = _raw_array.decode(stripped)
            except msgspec.DecodeError as exc:
                raise ValueError(f"body is not a JSON array: {exc}") from None
            return [bytes(e) for e in elements], range(1, len(elements) + 1), "index"
        return ([stripped] if stripped else []), [1], "line"
    values, lines = split_lines(body, 0)
    return values, lines, "line"


async def _serve(handler: IngestHandler, producer: AckedProducer, opts: HttpIngestOptions) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reports = asyncio.create_task(producer.serve_delivery_reports())
    runner = web.AppRunner(handler.app(), access_log=None, shutdown_timeout=opts.shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, opts.host, opts.port)
    await site.start()
    auth = "bearer token required" if opts.token else "no authentication"
    print(
        f"stream ingest: listening on http://{opts.host}:{opts.port}/events -> {opts.topic} "
        f"({auth})",
        file=sys.stderr,
        flush=True,
    )
    started = time.monotonic()
    await stop.wait()
    print("stream ingest: stopping; finishing requests in flight", file=sys.stderr, flush=True)
    await runner.cleanup()
    left = producer.close(opts.shutdown_timeout)
    await reports
    stats = handler.stats
    print(
        f"stream ingest: served {stats.requests:,} requests in {time.monotonic() - started:,.0f}s: "
        f"{stats.accepted:,} events accepted, {stats.rejected:,} rejected, "
        f"{stats.throttled:,} requests throttled (429)",
        file=sys.stderr,
        flush=True,
    )
    if left:
        print(f"stream ingest: {left} events were not acknowledged", file=sys.stderr)
        return 1
    return 0


def serve(conf: dict[str, str], validator: Validator, options: HttpIngestOptions) -> int:
    """Run the HTTP ingest server until SIGINT/SIGTERM; returns the exit code."""
    producer = AckedProducer(conf, options.max_pending)
    handler = IngestHandler(producer, validator, options)
    try:
        return asyncio.run(_serve(handler, producer, options))
    except OSError as exc:
        from stream.errors import FatalError

        raise FatalError(
            f"cannot listen on {options.host}:{options.port}: {exc.strerror}"
        ) from None
