"""Deterministic synthetic *orders* (``stream/pipelines/orders.yaml``), with ground truth.

The second event shape of the benchmark (``stream bench --workload orders``): an order
has an id, a customer (the key, and the join on the customer table), a creation time
(RFC 3339 with milliseconds, the event time), an amount and a currency (the join on the
exchange-rate service and the derived ``amount_eur``), a status, a channel, a nested
``shipping`` object and an ``items`` array — the fields of ``orders.schema.json``.

* **Ground truth.** Every record says whether it is valid and, if not, which
  ``INVALID_KINDS`` it is; each invalid kind breaks exactly one constraint of the
  schema, so the worker must dead-letter it (``tests/unit/test_bench_orders.py``
  checks each kind against the compiled pipeline).
* **Determinism.** ``generate_orders(count, config)`` depends only on the config; the
  customer table (``customer_table``) and the rates (``FX_RATES``) are fixed, so a
  harness can recompute every derived amount.
* **Speed.** A pool of 4,096 pre-encoded order tails (status, channel, shipping, items)
  and one bytes ``%`` format per order (id, customer, time, amount, currency): a few µs
  per order, fast enough to pre-produce the benchmark input (not a rate-limited load
  generator).

Event time advances at ``event_rate`` orders per second from ``start_ms`` (in order,
so no order is late for the pipeline's 30 s grace).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

import orjson

#: The exchange rates the benchmark's fx service answers (``/rates/{currency}``), to EUR.
FX_RATES: Final = {"EUR": 1.0, "USD": 0.9, "GBP": 1.25, "CHF": 1.05}
CURRENCIES: Final = tuple(FX_RATES)
#: Ways an order breaks the schema, spread evenly over the invalid records.
INVALID_KINDS: Final = (
    "not_json",
    "missing_field",
    "bad_amount",
    "bad_currency",
    "bad_sku",
    "bad_created_at",
    "empty_items",
    "bad_country",
)
SEGMENTS: Final = ("basic", "silver", "gold")
COUNTRIES: Final = ("DE", "FR", "NL", "IT", "ES", "GB", "CH", "US")
CHANNELS: Final = ("web", "app", "store", "partner")
STATUSES: Final = ("placed", "paid", "shipped")
#: 2026-12-02T10:00:00Z, a fixed default so output depends on the seed only.
DEFAULT_START_MS: Final = 1_796_205_600_000


@dataclass(frozen=True)
class OrderConfig:
    seed: int = 0
    invalid_ratio: float = 0.02
    #: Customers in the table (``c0`` .. ``c<n-1>``).
    customers: int = 1_000
    #: Share of valid orders from customers the table does not know (joined as null).
    unknown_customer_ratio: float = 0.01
    start_ms: int = DEFAULT_START_MS
    #: Orders per second of event time.
    event_rate: int = 100_000

    def __post_init__(self) -> None:
        if not 0 <= self.invalid_ratio < 1:
            raise ValueError("invalid_ratio must be in [0, 1)")
        if self.customers < 1 or self.event_rate < 1:
            raise ValueError("customers and event_rate must be positive")


class OrderRecord(NamedTuple):
    """One generated order: the Kafka key and value, and the ground truth."""

    key: bytes
    value: bytes
    valid: bool
    #: One of ``INVALID_KINDS`` for an invalid record, else None.
    invalid_kind: str | None
    order_id: str


def customer_id(n: int) -> str:
    return f"c{n}"


def customer_table(customers: int) -> dict[str, dict[str, str]]:
    """The customer table (compacted topic ``key -> value``): segment and country."""
    return {
        customer_id(n): {"segment": SEGMENTS[n % 3], "country": COUNTRIES[n % len(COUNTRIES)]}
        for n in range(customers)
    }


def expected_amount_eur(order: dict[str, Any]) -> float | None:
    """What the pipeline's derived field must be for ``order`` (None: no rate)."""
    rate = FX_RATES.get(str(order.get("currency")))
    return None if rate is None else float(order["amount"]) * rate


def _iso(ms: int) -> str:
    stamp = datetime.fromtimestamp(ms / 1000, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


_HEAD: Final = (
    b'{"order_id":"%s","customer_id":"%s","created_at":"%s.%03dZ","amount":%.2f,"currency":"%s",'
)
_POOL: Final = 4096


def _tails(rng: random.Random) -> list[bytes]:
    """Pre-encoded ``status, channel, shipping, items`` (the rest of an order)."""
    tails = []
    for _ in range(_POOL):
        items = [
            {
                "sku": f"{rng.choice(('ABC', 'DEF', 'XYZ'))}-{rng.randrange(10_000)}",
                "qty": 1 + rng.randrange(4),
            }
            for _ in range(1 + rng.randrange(3))
        ]
        rest = {
            "status": rng.choice(STATUSES),
            "channel": rng.choice(CHANNELS),
            "shipping": {"country": rng.choice(COUNTRIES), "express": rng.random() < 0.1},
            "items": items,
        }
        tails.append(orjson.dumps(rest)[1:])
    return tails


def _corrupt(kind: str, order: dict[str, Any]) -> bytes:
    broken = dict(order)
    if kind == "not_json":
        return orjson.dumps(order)[:-7]
    if kind == "missing_field":
        del broken["currency"]
    elif kind == "bad_amount":
        broken["amount"] = -abs(float(order["amount"]))
    elif kind == "bad_currency":
        broken["currency"] = "XXX"
    elif kind == "bad_sku":
        broken["items"] = [{"sku": "bad sku", "qty": 1}]
    elif kind == "bad_created_at":
        broken["created_at"] = "yesterday"
    elif kind == "empty_items":
        broken["items"] = []
    elif kind == "bad_country":
        broken["shipping"] = {"country": "Germany", "express": False}
    else:
        raise ValueError(f"unknown invalid kind {kind!r}")
    return orjson.dumps(broken)


def generate_orders(count: int, config: OrderConfig | None = None) -> Iterator[OrderRecord]:
    """``count`` orders; about ``invalid_ratio`` of them invalid, kinds in rotation."""
    config = config or OrderConfig()
    rng = random.Random(config.seed)
    tails = _tails(rng)
    last = config.customers - 1
    seconds: dict[int, bytes] = {}
    invalid_seen = 0
    rand, randrange, pareto = rng.random, rng.randrange, rng.paretovariate
    currencies = [c.encode() for c in CURRENCIES]
    for index in range(count):
        if rand() < config.unknown_customer_ratio:
            customer = b"x%d" % randrange(100)  # not in the table
        else:
            # a few big customers, a long tail (~Zipf), all within the table
            customer = b"c%d" % min(int(pareto(1.2)) - 1, last)
        created = config.start_ms + index * 1000 // config.event_rate
        second = seconds.get(created // 1000)
        if second is None:
            second = _iso(created - created % 1000)[:19].encode()
            seconds = {created // 1000: second}
        order_id = f"o-{config.seed}-{index}"
        value = (
            _HEAD
            % (
                order_id.encode(),
                customer,
                second,
                created % 1000,
                5 + rand() * 495,
                currencies[randrange(4)],
            )
            + tails[randrange(_POOL)]
        )
        if config.invalid_ratio and rand() < config.invalid_ratio:
            kind = INVALID_KINDS[invalid_seen % len(INVALID_KINDS)]
            invalid_seen += 1
            yield OrderRecord(customer, _corrupt(kind, orjson.loads(value)), False, kind, order_id)
        else:
            yield OrderRecord(customer, value, True, None, order_id)
