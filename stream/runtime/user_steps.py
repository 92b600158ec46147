"""User-written stages as links of the chain: loading, running, isolating, guarding.

:func:`load_user_steps` imports each ``stages:`` entry of the pipeline file at
start-up; a module that does not import, a missing function or one that does not
take exactly one argument fails then, naming the stage (``stages[0].python: ...``).

:class:`UserStep` hands the function a :class:`~stream.stages.user.StageBatch` and
applies what it did to the :class:`~stream.runtime.work.WorkBatch`. A plain function
runs as it is; an ``async`` one (a batched call to an outside service) is awaited
with the stage's ``timeout``, retried ``retries`` times with backoff, behind its
own circuit breaker. When the service stays unavailable the stage either waits
(``on_failure: pause``: :class:`~stream.runtime.steps.DependencyUnavailable`, the
runner re-fetches the batch later) or dead-letters the batch's records with class
``stage_unavailable``. Any other exception is a bug in the stage: it runs again
one event at a time and the events it raises on are dead-lettered as
``unprocessable``; the partition never stops.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import msgspec
import orjson

from stream.errors import ConfigError, TransientError
from stream.kafka.reader import offset_of
from stream.models import encoder
from stream.pipeline_spec import UserStageSpec
from stream.resilience.circuit_breaker import CircuitBreaker
from stream.resilience.retry import RetryPolicy
from stream.runtime.steps import ISOLATED_ATTEMPTS, UNPROCESSABLE, DependencyUnavailable
from stream.runtime.work import Extra, Rejected, WorkBatch
from stream.stages.user import Position, StageBatch

log = logging.getLogger(__name__)

#: ``dlq.error.class`` when an async stage's service stayed unavailable (``on_failure: dlq``).
STAGE_UNAVAILABLE: Final = "stage_unavailable"

StageFunction = Callable[[StageBatch], None] | Callable[[StageBatch], Awaitable[None]]


def load_function(spec: UserStageSpec, index: int) -> StageFunction:
    """Import ``module:function``; ConfigError naming the stage when it cannot be used."""
    where = f"stages[{index}].python"
    module_name, _, attr = spec.python.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(where, f"cannot import {module_name!r}: {exc}") from None
    function = getattr(module, attr, None)
    if function is None or not callable(function):
        raise ConfigError(where, f"{module_name!r} has no function {attr!r}")
    try:
        params = [
            p
            for p in inspect.signature(function).parameters.values()
            if p.default is inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        params = [None]  # type: ignore[list-item]  # builtins without a signature: trust them
    if len(params) != 1:
        raise ConfigError(
            where, f"{spec.python} must take one argument (the StageBatch), takes {len(params)}"
        )
    result: StageFunction = function
    return result


class UserStep:
    """One user stage in the chain (sync or async)."""

    def __init__(self, spec: UserStageSpec, function: StageFunction, input_topic: str) -> None:
        self.name = spec.stage_name
        self.spec = spec
        self._function = function
        self._topic = input_topic
        self.is_async = inspect.iscoroutinefunction(function)
        self._retry = RetryPolicy(
            initial=0.1, multiplier=2.0, max_delay=2.0, max_attempts=spec.retries + 1
        )
        self.breaker = CircuitBreaker(
            f"stage-{self.name}",
            failure_threshold=3,
            recovery_timeout=5.0,
            failure_on=(TransientError,),
        )

    # -- the two ways in ----------------------------------------------------------------------

    def run(self, work: WorkBatch) -> None:
        """A plain function: call it on the batch, apply what it did."""
        if not work.events:
            return
        batch = self._batch(work, range(len(work.events)))
        try:
            self._function(batch)
        except Exception as exc:
            self._isolate_sync(work, exc)
            return
        self._apply(work, batch)

    async def run_async(self, work: WorkBatch) -> None:
        """An async function: timeout, retries and breaker around the call."""
        if not work.events:
            return
        batch = self._batch(work, range(len(work.events)))
        try:
            await self._call_guarded(batch)
        except TransientError as exc:
            if self.spec.on_failure == "pause":
                raise DependencyUnavailable(self.name, str(exc)) from None
            work.rejects += [
                Rejected(i, self.name, STAGE_UNAVAILABLE, str(exc), self.spec.retries + 1)
                for i in work.indices
            ]
            work.keep([])
            return
        except Exception as exc:
            await self._isolate_async(work, exc)
            return
        self._apply(work, batch)

    async def _call_guarded(self, batch: StageBatch) -> None:
        breaker = self.breaker
        attempts = self._retry.max_attempts
        last: BaseException | None = None
        for attempt in range(1, attempts + 1):
            if not breaker.allow():
                raise TransientError(f"stage {self.name}: circuit breaker open")
            try:
                await asyncio.wait_for(self._function(batch), self.spec.timeout / 1000)  # type: ignore[arg-type]
            except (TimeoutError, TransientError, ConnectionError, OSError) as exc:
                failure = (
                    exc
                    if isinstance(exc, TransientError)
                    else TransientError(
                        f"stage {self.name}: {type(exc).__name__}: {exc}".rstrip(": ")
                    )
                )
                breaker.record_failure(failure)
                last = failure
                if attempt < attempts:
                    await asyncio.sleep(self._retry.backoff_cap(attempt))
                continue
            breaker.record_success()
            return
        assert last is not None
        raise last

    # -- building and applying ------------------------------------------------------------------

    def _batch(self, work: WorkBatch, js: Sequence[int]) -> StageBatch:
        records = work.records
        indices, parts = work.indices, work.partitions
        positions = [
            Position(self._topic, parts[indices[j]], offset_of(records[indices[j]])) for j in js
        ]
        return StageBatch(
            [work.events[j] for j in js],
            [(work.outputs or work.raws)[j] for j in js],
            positions,
            self.spec.topics,
        )

    def _apply(self, work: WorkBatch, batch: StageBatch, js: Sequence[int] | None = None) -> None:
        """Drops, rejects, updates and extra records of ``batch`` (events ``js`` of work)."""
        js = list(range(len(work.events))) if js is None else list(js)
        for k, topic, key, value in batch.emitted:
            work.extra.append(Extra(work.indices[js[k]], topic, key, value))
        for k, fields in batch.updated.items():
            j = js[k]
            if work.outputs:
                work.outputs[j] = _with_fields(work.outputs[j], fields)
            else:
                work.raws[j] = encoder.encode(work.events[j])
        for k, (reason, message) in batch.rejected.items():
            work.rejects.append(Rejected(work.indices[js[k]], self.name, reason, message))
        gone = {js[k] for k in batch.dropped} | {js[k] for k in batch.rejected}
        if gone:
            work.dropped += len({js[k] for k in batch.dropped} - set(batch.rejected))
            work.keep([j for j in range(len(work.events)) if j not in gone])

    # -- isolation: the stage raised ------------------------------------------------------------

    def _isolate_sync(self, work: WorkBatch, error: Exception) -> None:
        self._warn(error, len(work.events))
        singles: list[tuple[int, StageBatch]] = []
        for j in range(len(work.events)):
            one = self._batch(work, [j])
            try:
                self._function(one)
            except Exception as exc:
                work.rejects.append(self._unprocessable(work, j, exc))
                continue
            singles.append((j, one))
        self._apply_singles(work, singles)

    async def _isolate_async(self, work: WorkBatch, error: Exception) -> None:
        self._warn(error, len(work.events))
        singles: list[tuple[int, StageBatch]] = []
        for j in range(len(work.events)):
            one = self._batch(work, [j])
            try:
                await asyncio.wait_for(self._function(one), self.spec.timeout / 1000)  # type: ignore[arg-type]
            except Exception as exc:
                work.rejects.append(self._unprocessable(work, j, exc))
                continue
            singles.append((j, one))
        self._apply_singles(work, singles)

    def _apply_singles(self, work: WorkBatch, singles: list[tuple[int, StageBatch]]) -> None:
        """Keep the events the stage handled alone, then apply what it did to each."""
        merged = StageBatch([], [], [], self.spec.topics)
        for k, (_, one) in enumerate(singles):  # each ``one`` holds event 0 only
            merged.emitted += [(k, t, key, v) for _, t, key, v in one.emitted]
            if 0 in one.updated:
                merged.updated[k] = one.updated[0]
            if 0 in one.rejected:
                merged.rejected[k] = one.rejected[0]
            if one.dropped:
                merged.dropped.add(k)
        work.keep([j for j, _ in singles])
        self._apply(work, merged)

    def _unprocessable(self, work: WorkBatch, j: int, exc: Exception) -> Rejected:
        message = f"{type(exc).__name__}: {exc}"
        return Rejected(work.indices[j], self.name, UNPROCESSABLE, message, ISOLATED_ATTEMPTS)

    def _warn(self, error: Exception, n: int) -> None:
        log.warning(
            "stage %s raised %s: %s on %d events; isolating the events it fails on",
            self.name,
            type(error).__name__,
            error,
            n,
        )


def _with_fields(output: bytes, fields: dict[str, Any]) -> bytes:
    """An enriched value with top-level fields replaced (only for events a stage changed)."""
    body = orjson.loads(output)
    body.update({k: msgspec.to_builtins(v) for k, v in fields.items()})
    return orjson.dumps(body)


def load_user_steps(specs: Sequence[UserStageSpec], input_topic: str) -> list[UserStep]:
    """Import every user stage; ConfigError naming the first that cannot be used."""
    steps = [UserStep(spec, load_function(spec, i), input_topic) for i, spec in enumerate(specs)]
    names = [s.name for s in steps]
    for i, name in enumerate(names):
        if name in ("validate", "enrich", "correlate", "decode") or names.index(name) != i:
            raise ConfigError(f"stages[{i}].name", f"stage name {name!r} is already used")
    return steps


__all__ = ["STAGE_UNAVAILABLE", "UserStep", "load_function", "load_user_steps"]
