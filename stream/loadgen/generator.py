"""Deterministic synthetic events, fast enough to saturate a broker from Python.

Why it is shaped like this:

* **Speed.** A producer process has a few microseconds per event for
  everything, so generating one must cost about one. At start-up a pool of
  16,384 *templates* is drawn (source, entity, type, severity, value,
  attributes, trace id, timestamp form, jitter), each pre-encoded as bytes. Per
  event the hot loop reads one 16-bit random number (drawn for the whole block
  with ``randbytes``), picks a template and splices in the event id and
  timestamp with one bytes ``%`` format; RFC 3339 strings reuse a per-second
  prefix cache. Rare cases (bursts, late and invalid records) are patched in
  after the loop. No dict and no JSON encoder per event.
* **Determinism.** Events come in blocks of ``BLOCK_SIZE``; block ``b`` is seeded
  by ``(seed, b)`` alone. Any set of processes that covers the blocks produces
  exactly the records one process would, which is how ``stream loadgen
  --processes N`` stays deterministic per seed.
* **Ground truth.** Every record carries whether it is valid, which invalid
  kind it is and its event time, so tests and benchmarks can check exact counts.

Realism: sources ``svc-0..svc-N`` and entities are Zipf-distributed; severities
are mostly ``info`` with some warnings and errors, plus occasional error bursts
from one source so correlation rules fire; timestamps mix epoch milliseconds and
RFC 3339 strings with various offsets; event time follows the record index at
``event_rate`` events per second with out-of-order jitter, and ``late_ratio``
of the events are pushed back by ``late_by_ms`` (more than a window).

Invalid records (``invalid_ratio``) are spread evenly over ``INVALID_KINDS``.
All of them fail ``stream.models.event_decoder`` except one ``bad_timestamp``
variant, a well-formed time in the year 2999, which only an event-time bounds
check (the validate stage's ``max_future_ms``) can reject.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import orjson

from stream.errors import ConfigError
from stream.loadgen.reference import service_name

INVALID_KINDS: Final = ("not_json", "missing_field", "wrong_type", "bad_enum", "bad_timestamp")
REQUIRED_FIELDS: Final = ("event_id", "type", "source", "timestamp", "severity")
#: Records per deterministic block (the unit of work shared between processes).
BLOCK_SIZE: Final = 1024
#: 2026-01-01T00:00:00Z: a fixed default so output depends on the seed only.
DEFAULT_START_MS: Final = 1_767_225_600_000
#: A well-formed timestamp no sane clock produces; bounds checks must reject it.
FAR_FUTURE_TIMESTAMP: Final = "2999-01-01T00:00:00Z"

_POOL_SIZE: Final = 1 << 14
_ZIPF_TABLE_BITS: Final = 16
_BURST_TEMPLATES: Final = 8

_TYPES: Final = (
    ("http.request", 40),
    ("db.query", 15),
    ("health.check", 12),
    ("cache.miss", 10),
    ("auth.login", 8),
    ("queue.publish", 8),
    ("job.completed", 6),
    ("deploy.finished", 1),
)
_SEVERITIES: Final = (("debug", 60), ("info", 800), ("warning", 90), ("error", 44), ("critical", 6))
_REGIONS: Final = ("eu-west-1", "eu-central-1", "us-east-1", "us-west-2", "ap-south-1")
#: (offset minutes, suffix); eight entries so three random bits pick one.
_OFFSETS: Final = (
    (0, b"Z"),
    (0, b"Z"),
    (0, b"+00:00"),
    (60, b"+01:00"),
    (120, b"+02:00"),
    (-300, b"-05:00"),
    (330, b"+05:30"),
    (-480, b"-08:00"),
)
_BAD_SEVERITIES: Final = ("fatal", "INFO", "warn", "notice", "")
_BAD_TIMESTAMPS: Final[tuple[str | float, ...]] = (
    "yesterday",
    "2026-05-01T12:00:00",  # no offset: RFC 3339 requires one
    "2026-13-45T25:61:00Z",
    "1767225600000",  # epoch ms, but as a string
    1767225600000.5,  # a float is neither epoch ms nor RFC 3339
    FAR_FUTURE_TIMESTAMP,
)


@dataclass(frozen=True, slots=True)
class GeneratorConfig:
    """What to generate. Equal configs generate byte-identical records."""

    seed: int = 0
    #: Number of sources ``svc-0..svc-{sources-1}``, Zipf-distributed.
    sources: int = 50
    #: Number of entities ``entity-0..``, Zipf-distributed.
    entities: int = 1000
    #: Zipf exponent: weight of rank ``k`` is ``1 / (k + 1) ** zipf_s``.
    zipf_s: float = 1.1
    #: Fraction of records that violate the input contract.
    invalid_ratio: float = 0.0
    #: Fraction of records whose event time is pushed back by ``late_by_ms``.
    late_ratio: float = 0.0
    late_by_ms: int = 300_000
    #: Out-of-order jitter: event time is moved back by up to this much.
    jitter_ms: int = 2_000
    #: Approximate record size in bytes; attributes are padded to reach it (0 = natural).
    payload_size: int = 0
    #: Event time of record 0 (epoch ms).
    start_ms: int = DEFAULT_START_MS
    #: Events per second of event time (record ``i`` is at ``start + i / event_rate``).
    event_rate: int = 10_000
    #: Fraction of records with an RFC 3339 string timestamp (the rest use epoch ms).
    string_timestamp_ratio: float = 0.5
    #: Chance per block of 1024 records of an error burst from one source.
    burst_probability: float = 0.05

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ConfigError("seed", "must be >= 0")
        if self.sources < 1:
            raise ConfigError("sources", "must be >= 1")
        if self.entities < 1:
            raise ConfigError("entities", "must be >= 1")
        if self.event_rate < 1:
            raise ConfigError("event_rate", "must be >= 1")
        for name in ("invalid_ratio", "late_ratio", "string_timestamp_ratio", "burst_probability"):
            ratio = getattr(self, name)
            if not 0.0 <= ratio <= 1.0:
                raise ConfigError(name, f"must be between 0 and 1, got {ratio}")
        if self.payload_size < 0:
            raise ConfigError("payload_size", "must be >= 0")
        if self.late_by_ms < 0 or self.jitter_ms < 0:
            raise ConfigError("late_by_ms/jitter_ms", "must be >= 0")


class GeneratedRecord(NamedTuple):
    """One record with its ground truth."""

    key: bytes
    value: bytes
    event_id: str
    valid: bool
    invalid_kind: str | None
    #: The event time the record carries (or would carry, for invalid ones).
    event_time_ms: int
    late: bool


class Block(NamedTuple):
    """Records ``first_index .. first_index + len(values) - 1``, as parallel lists."""

    first_index: int
    keys: list[bytes]
    values: list[bytes]
    event_times: list[int]
    #: Offset within the block -> invalid kind.
    invalid: dict[int, str]
    #: Offsets within the block of late records.
    late: list[int]


class _Template(NamedTuple):
    key: bytes
    #: ``{"event_id":"<prefix>%d","timestamp":<%d or "%s.%03d<offset>">``
    head_format: bytes
    #: The rest of the record, starting with ``,``.
    body: bytes
    #: ``None`` for an epoch-ms timestamp, else the offset of the RFC 3339 string in ms.
    offset_ms: int | None
    #: How far this template moves event time back (out-of-order jitter).
    jitter_ms: int


def _zipf_table(n: int, s: float, rng: random.Random) -> list[int]:
    """A lookup table of ``2**_ZIPF_TABLE_BITS`` ranks drawn from Zipf(n, s)."""
    weights = [1.0 / (k + 1) ** s for k in range(n)]
    return rng.choices(range(n), weights=weights, k=1 << _ZIPF_TABLE_BITS)


def _weighted(pairs: tuple[tuple[str, int], ...], rng: random.Random) -> str:
    return rng.choices([p[0] for p in pairs], weights=[p[1] for p in pairs])[0]


def _positions(ratio: float, size: int, rng: random.Random) -> list[int]:
    """``ratio * size`` distinct positions (rounded at random so the mean is exact)."""
    wanted = int(ratio * size + rng.random())
    return sorted(rng.sample(range(size), min(wanted, size))) if wanted else []


class EventGenerator:
    """Generates blocks of records for one :class:`GeneratorConfig`."""

    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        rng = random.Random(f"pool:{config.seed}")
        self._source_table = _zipf_table(config.sources, config.zipf_s, rng)
        self._entity_table = _zipf_table(config.entities, config.zipf_s, rng)
        self._id_prefix = f"ev-{config.seed}-".encode()
        templates = [self._template(rng, None) for _ in range(_POOL_SIZE)]
        # Indexed by a 16-bit random number; repeating the pool keeps its distribution.
        self._pool = templates * ((1 << 16) // _POOL_SIZE)
        self._burst_pools: dict[int, list[_Template]] = {}
        self._heads: dict[int, bytes] = {}
        self._offset_table = [j * 1000 // config.event_rate for j in range(BLOCK_SIZE)]

    # -- templates ---------------------------------------------------------------------------

    def _template(self, rng: random.Random, burst_source: int | None) -> _Template:
        cfg = self.config
        mask = (1 << _ZIPF_TABLE_BITS) - 1
        if burst_source is None:
            source = self._source_table[rng.getrandbits(_ZIPF_TABLE_BITS) & mask]
            severity = _weighted(_SEVERITIES, rng)
            event_type = _weighted(_TYPES, rng)
        else:
            source = burst_source
            severity = "critical" if rng.random() < 0.25 else "error"
            event_type = rng.choice(("http.request", "db.query", "queue.publish"))
        entity = self._entity_table[rng.getrandbits(_ZIPF_TABLE_BITS) & mask]
        record: dict[str, Any] = {
            "type": event_type,
            "source": service_name(source),
            "severity": severity,
            "entity": f"entity-{entity}",
        }
        attributes: dict[str, str | int | float | bool] = {
            "region": rng.choice(_REGIONS),
            "host": f"{service_name(source)}-{rng.randrange(8)}",
        }
        failing = severity in ("error", "critical")
        if event_type == "http.request":
            record["value"] = round(rng.lognormvariate(3.0, 0.8), 2)  # latency ms
            attributes["status"] = rng.choice((500, 502, 503)) if failing else 200
            attributes["method"] = rng.choice(("GET", "GET", "GET", "POST", "PUT"))
        elif event_type == "db.query":
            record["value"] = round(rng.lognormvariate(1.5, 1.0), 3)
            attributes["retried"] = failing or rng.random() < 0.05
        elif event_type == "queue.publish":
            record["value"] = rng.randrange(1, 500)
        if rng.random() < 0.4:
            record["trace_id"] = f"{rng.getrandbits(128):032x}"
        record["attributes"] = attributes

        offset_ms: int | None = None
        head = b'{"event_id":"' + self._id_prefix.replace(b"%", b"%%") + b'%d","timestamp":'
        if rng.random() < cfg.string_timestamp_ratio:
            offset_minutes, suffix = rng.choice(_OFFSETS)
            offset_ms = offset_minutes * 60_000
            head += b'"%s.%03d' + suffix + b'"'
        else:
            head += b"%d"
        jitter = rng.randrange(cfg.jitter_ms + 1)

        body = b"," + orjson.dumps(record)[1:]
        # '{"event_id":"' + prefix + index + '","timestamp":' + timestamp + body
        estimate = len(head) + 8 + (29 if offset_ms is not None else 13) + len(body)
        pad = cfg.payload_size - estimate - len(',"pad":""')
        if pad > 0:
            attributes["pad"] = "x" * pad
            body = b"," + orjson.dumps(record)[1:]
        return _Template(service_name(source).encode(), head, body, offset_ms, jitter)

    def _burst_pool(self, source: int) -> list[_Template]:
        pool = self._burst_pools.get(source)
        if pool is None:
            rng = random.Random(f"burst:{self.config.seed}:{source}")
            pool = [self._template(rng, source) for _ in range(_BURST_TEMPLATES)]
            self._burst_pools[source] = pool
        return pool

    def _head(self, second: int) -> bytes:
        head = self._heads.get(second)
        if head is None:
            if len(self._heads) > 100_000:
                self._heads.clear()
            head = b"%04d-%02d-%02dT%02d:%02d:%02d" % time.gmtime(second)[:6]
            self._heads[second] = head
        return head

    def _render(self, index: int, template: _Template, t: int) -> bytes:
        """One record the slow way; the loop in :meth:`block` inlines exactly this."""
        if template.offset_ms is None:
            return template.head_format % (index, t) + template.body
        second, millis = divmod(t + template.offset_ms, 1000)
        return template.head_format % (index, self._head(second), millis) + template.body

    # -- records -----------------------------------------------------------------------------

    def event_id(self, index: int) -> str:
        """The event id of record ``index`` (unique per seed)."""
        return f"{self._id_prefix.decode()}{index}"

    def block(self, block_index: int, size: int = BLOCK_SIZE) -> Block:
        """Records ``block_index * BLOCK_SIZE`` onwards; ``size`` may cut the block short."""
        cfg = self.config
        size = max(0, min(size, BLOCK_SIZE))
        rng = random.Random(f"block:{cfg.seed}:{block_index}")
        picks = memoryview(rng.randbytes(2 * size)).cast("H")
        first = block_index * BLOCK_SIZE
        base = cfg.start_ms + first * 1000 // cfg.event_rate

        keys: list[bytes] = []
        values: list[bytes] = []
        times: list[int] = []
        add_key = keys.append
        add_value = values.append
        add_time = times.append
        pool = self._pool
        heads = self._heads
        if len(heads) > 100_000:
            heads.clear()
        get_head = heads.get
        gmtime = time.gmtime
        steps = self._offset_table  # longer than the block when it is cut short
        for index, pick, step in zip(range(first, first + size), picks, steps, strict=False):
            key, head_format, body, offset_ms, jitter = pool[pick]
            t = base + step - jitter
            if offset_ms is None:
                value = head_format % (index, t) + body
            else:
                second, millis = divmod(t + offset_ms, 1000)
                head = get_head(second)
                if head is None:
                    head = heads[second] = b"%04d-%02d-%02dT%02d:%02d:%02d" % gmtime(second)[:6]
                value = head_format % (index, head, millis) + body
            add_key(key)
            add_value(value)
            add_time(t)

        # Rare cases are patched in afterwards so the loop above stays branch-light.
        chosen: dict[int, _Template] = {}
        if size and rng.random() < cfg.burst_probability:
            burst_pool = self._burst_pool(self._source_table[rng.getrandbits(_ZIPF_TABLE_BITS)])
            burst_start = rng.randrange(size)
            for j in range(burst_start, min(size, burst_start + rng.randint(8, 24))):
                template = burst_pool[rng.getrandbits(3)]
                chosen[j] = template
                keys[j] = template.key
                times[j] = base + self._offset_table[j] - template.jitter_ms
                values[j] = self._render(first + j, template, times[j])
        late = _positions(cfg.late_ratio, size, rng)
        for j in late:
            template = chosen.get(j) or pool[picks[j]]
            times[j] -= cfg.late_by_ms
            values[j] = self._render(first + j, template, times[j])
        invalid: dict[int, str] = {}
        for turn, j in enumerate(_positions(cfg.invalid_ratio, size, rng), start=block_index):
            kind = INVALID_KINDS[turn % len(INVALID_KINDS)]
            values[j] = _corrupt(kind, values[j], first + j, rng)
            invalid[j] = kind
        return Block(first, keys, values, times, invalid, late)

    def records(self, count: int) -> Iterator[GeneratedRecord]:
        """The first ``count`` records, with their ground truth."""
        for block_index, size in blocks_for(0, 1, count):
            block = self.block(block_index, size)
            late = set(block.late)
            for j, value in enumerate(block.values):
                kind = block.invalid.get(j)
                index = block.first_index + j
                yield GeneratedRecord(
                    block.keys[j],
                    value,
                    self.event_id(index),
                    kind is None,
                    kind,
                    block.event_times[j],
                    j in late,
                )


def blocks_for(process: int, processes: int, count: int | None) -> Iterator[tuple[int, int]]:
    """``(block_index, size)`` pairs process ``process`` of ``processes`` generates.

    Process ``p`` takes blocks ``p, p + processes, ...`` so all processes advance
    through event time together; ``count=None`` never ends.
    """
    if not 0 <= process < processes:
        raise ConfigError("processes", f"process {process} is not in 0..{processes - 1}")
    block_index = process
    while True:
        first = block_index * BLOCK_SIZE
        if count is not None:
            if first >= count:
                return
            yield block_index, min(BLOCK_SIZE, count - first)
        else:
            yield block_index, BLOCK_SIZE
        block_index += processes


def _corrupt(kind: str, value: bytes, index: int, rng: random.Random) -> bytes:
    """Turn a valid record into an invalid one of ``kind`` (rare, so orjson is fine)."""
    if kind == "not_json":
        if rng.random() < 0.5:
            return value[: len(value) // 2]
        return b"event %d failed: upstream timeout" % index
    record = orjson.loads(value)
    if kind == "missing_field":
        del record[rng.choice(REQUIRED_FIELDS)]
    elif kind == "wrong_type":
        field, bad = rng.choice(
            (
                ("event_id", index),
                ("source", 42),
                ("type", None),
                ("value", "high"),
                ("attributes", ["region", "eu"]),
                ("entity", 7),
            )
        )
        record[field] = bad
    elif kind == "bad_enum":
        record["severity"] = rng.choice(_BAD_SEVERITIES)
    elif kind == "bad_timestamp":
        record["timestamp"] = rng.choice(_BAD_TIMESTAMPS)
    else:  # pragma: no cover - INVALID_KINDS is closed
        raise ValueError(kind)
    return orjson.dumps(record)


def generate(count: int, seed: int = 0, **options: Any) -> Iterator[GeneratedRecord]:
    """The first ``count`` records for ``GeneratorConfig(seed=seed, **options)``."""
    return EventGenerator(GeneratorConfig(seed=seed, **options)).records(count)
