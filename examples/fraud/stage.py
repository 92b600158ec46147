"""Fraud scores for orders, from an HTTP scoring service, one request per batch.

Named in the pipeline file (``examples/fraud/pipeline.yaml``)::

    stages:
      - python: examples.fraud.stage:score
        after: enrich
        topics: [orders.fraud]
        timeout: 2s
        retries: 2
        on_failure: pause

Per batch the stage POSTs ``[{"id", "customer_id", "amount_eur"}, ...]`` to
``$FRAUD_SCORING_URL`` (default ``http://127.0.0.1:8090/score``) and gets
``{"scores": [0.12, ...]}`` back in the same order. Each order's output gets a
``fraud_score``; orders scoring at least ``SUSPECT`` are copied to ``orders.fraud``;
at least ``BLOCK`` are dead-lettered as ``suspected_fraud`` instead of written.
A slow or failing service is the pipeline's business (timeout, retries, breaker,
``on_failure``), not the stage's: it just raises.
"""

from __future__ import annotations

import os
from typing import Final

import aiohttp

from stream.stages.user import StageBatch

SUSPECT: Final = 0.8
BLOCK: Final = 0.97
DEFAULT_URL: Final = "http://127.0.0.1:8090/score"


async def score(batch: StageBatch) -> None:
    orders = [
        {
            "id": event.order_id,
            "customer_id": event.customer_id,
            "amount": event.amount,
        }
        for event in batch.events
    ]
    url = os.environ.get("FRAUD_SCORING_URL", DEFAULT_URL)
    async with aiohttp.ClientSession() as session, session.post(url, json=orders) as response:
        response.raise_for_status()
        scores = (await response.json())["scores"]
    if len(scores) != len(orders):
        raise ValueError(f"scoring service answered {len(scores)} scores for {len(orders)} orders")
    for i, (order, value) in enumerate(zip(orders, scores, strict=True)):
        if value >= BLOCK:
            batch.reject(i, "suspected_fraud", f"fraud score {value:.2f} >= {BLOCK}")
            continue
        batch.update(i, fraud_score=value)
        if value >= SUSPECT:
            batch.emit(
                "orders.fraud", {**order, "score": value}, key=str(order["customer_id"]), of=i
            )
