"""Wire models and codecs the engine shares across pipelines: correlation records, splicing.

The input events themselves have no fixed model: each pipeline's schema is compiled
into a ``msgspec.Struct`` at start-up (:mod:`stream.schema`). What is here does not
depend on any event shape. ``Struct(gc=False)``: no GC-tracked allocation per record.
"""

from __future__ import annotations

from typing import Final

import msgspec


class Correlation(msgspec.Struct, gc=False):
    """One correlation result written to the correlations topic.

    Not ``omit_defaults``: every field the README lists is in every record — with
    it, ``final: true`` (the default) was dropped and consumers filtering on
    ``final == true`` got nothing.
    """

    rule: str
    kind: str
    group: dict[str, str]
    window_start: int
    window_end: int
    aggregate: str
    value: float
    count: int
    first_event_time: int
    last_event_time: int
    sample_event_ids: list[str]
    final: bool = True
    #: Lineage: lowest and highest input offset of the events counted (-1: unknown).
    first_offset: int = -1
    last_offset: int = -1


correlation_decoder: Final = msgspec.json.Decoder(Correlation)
encoder: Final = msgspec.json.Encoder()


#: Output keys the enrich stage adds; an input already using them is re-encoded instead of spliced.
RESERVED_OUTPUT_KEYS: Final = (b'"event_time_ms"', b'"enrichment"')
SPLICE_FORMAT: Final = b'%s,"event_time_ms":%d,"enrichment":%s}'


def splice_enriched(raw: bytes, event_time_ms: int, enrichment_json: bytes) -> bytes:
    """Append ``event_time_ms`` and ``enrichment`` to the validated input JSON object.

    ``raw`` must be a record value that decoded into an :class:`Event` (so it is
    one JSON object and ends with ``}`` after trailing whitespace) and must not
    contain :data:`RESERVED_OUTPUT_KEYS`. Reusing the producer's bytes skips a
    re-encode per event and keeps fields the contract does not name.
    """
    return SPLICE_FORMAT % (raw.rstrip()[:-1], event_time_ms, enrichment_json)
