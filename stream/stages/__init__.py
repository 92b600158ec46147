"""Pipeline stages: validate -> enrich -> correlate.

Each stage is a plain object with a batch method: a list in, a list out plus
rejects. Stages do no I/O and know nothing about Kafka, Faust or metrics; the
runner (``stream.pipeline``) maps results back to records, counts them and
writes them. That keeps them fast to test and easy to replace.
"""

from typing import NamedTuple


class Reject(NamedTuple):
    """One record a stage refused. ``position`` is its index in the stage's input batch."""

    position: int
    error_class: str
    message: str
