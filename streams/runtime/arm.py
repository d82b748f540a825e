"""The arm runtime: what every arm shares, so an arm is one class with one `handle` method.

The runtime consumes `octo.arm.<name>.requests`, runs `Arm.handle` under a timeout, turns every
outcome (an answer, an exception, a timeout) into one `ArmResult` on `octo.arm.results` keyed by
the task id, dead-letters a request it cannot decode, counts and times everything.

Delivery is at least once: a request's offset is committed only after its result has been
acknowledged by the broker, so an arm killed mid-request has its request redelivered to another
member of the group. The orchestrator ignores the duplicate result that can follow.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

import faust
from faust.types import EventT
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field

from octollm.codec import Codec, CodecError
from octollm.contracts.models import ArmRequest, ArmResult, ArmStatus, DeadLetter, Usage
from octollm.runtime.app import arm_group, create_app, topic
from octollm.settings import Settings
from octollm.topics import ARM_RESULTS, DLQ, arm_requests, full_name

if TYPE_CHECKING:
    from octollm.llm import LLMClient

log = logging.getLogger("octollm.runtime.arm")

ARM_REQUESTS = Counter(
    "octollm_arm_requests_total",
    "Arm requests handled, by arm and result status",
    ["arm", "status"],
)
ARM_DURATION = Histogram(
    "octollm_arm_duration_seconds",
    "Time an arm spent on one request",
    ["arm"],
    buckets=(0.005, 0.02, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
ARM_DEAD_LETTERS = Counter(
    "octollm_arm_dead_letters_total", "Arm requests that could not be decoded", ["arm"]
)


#: Artifact naming what an arm cut to fit its prompt or its answer (comma list, e.g.
#: "context,output"): an OK result with it is a partial answer, and the judge fails it.
TRUNCATED = "truncated"


class ArmOutput(BaseModel):
    """What an arm's `handle` returns; the runtime turns it into an `ArmResult`."""

    model_config = ConfigDict(extra="forbid")

    output: str = ""
    status: ArmStatus = ArmStatus.OK  # OK / FAILED / REJECTED; TIMED_OUT is the runtime's
    reason: str | None = None
    artifacts: dict[str, str] = Field(default_factory=dict)
    usage: Usage = Field(default_factory=Usage)


def clip(text: str, limit: int, what: str, cut: list[str]) -> str:
    """`text[:limit]`, adding `what` to `cut` when that drops anything: an arm never shortens
    its input without saying so (it reports `cut` as the `truncated` artifact)."""
    if len(text) <= limit:
        return text
    if what not in cut:
        cut.append(what)
    return text[:limit]


class TaskLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Puts `arm`, `worker`, and the task's ids, when given, on every line."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = {**(self.extra or {}), **kwargs.pop("extra", {})}
        kwargs["extra"] = extra
        fields = " ".join(f"{k}={v}" for k, v in extra.items())
        return f"{msg} [{fields}]", kwargs


class ArmContext:
    """One per worker process: settings, identity, a logger and the LLM client (made lazily)."""

    def __init__(self, settings: Settings, worker_id: str, arm: str) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.arm = arm
        self.log = TaskLog(logging.getLogger(f"octollm.arms.{arm}"), {"arm": arm})
        self._llm: LLMClient | None = None

    @property
    def llm(self) -> LLMClient:
        if self._llm is None:
            from octollm.llm import LLMClient

            self._llm = LLMClient(self.settings.for_arm(self.arm))
        return self._llm

    async def aclose(self) -> None:
        if self._llm is not None:
            await self._llm.aclose()
            self._llm = None


class Arm(abc.ABC):
    """Base of every arm: a name, what it can do, and `handle`."""

    name: ClassVar[str]
    capabilities: ClassVar[frozenset[str]]
    timeout_s: ClassVar[float] = 120.0

    async def setup(self, ctx: ArmContext) -> None:  # noqa: B027 (optional hook)
        """Once per worker, before the first request (start a subprocess, warm a cache)."""

    @abc.abstractmethod
    async def handle(self, request: ArmRequest, ctx: ArmContext) -> ArmOutput: ...

    async def close(self) -> None:  # noqa: B027 (optional hook)
        """Once per worker, after the last request."""


def default_worker_id(arm: str) -> str:
    return f"{arm}@{socket.gethostname()}:{os.getpid()}"


def _now() -> datetime:
    return datetime.now(UTC)


def request_timeout(arm: Arm, request: ArmRequest, now: datetime) -> float:
    """Seconds the arm may spend: its own limit or the request's deadline, whichever is first."""
    budget = arm.timeout_s
    if request.deadline_at is not None:
        budget = min(budget, (request.deadline_at - now).total_seconds())
    return max(budget, 0.0)


async def run_request(arm: Arm, request: ArmRequest, ctx: ArmContext) -> ArmResult:
    """Run one request to an `ArmResult`; never raises for what the arm does.

    An exception becomes FAILED with its message, running out of time TIMED_OUT; a request
    whose deadline has already passed is not started at all.
    """
    started = _now()
    timeout = request_timeout(arm, request, started)
    output: ArmOutput
    if timeout <= 0:
        output = ArmOutput(status=ArmStatus.TIMED_OUT, reason="deadline passed before the start")
    else:
        try:
            output = await asyncio.wait_for(arm.handle(request, ctx), timeout)
            if output.status is ArmStatus.TIMED_OUT:  # only the runtime decides timeouts
                output = output.model_copy(update={"status": ArmStatus.FAILED})
        except TimeoutError:
            output = ArmOutput(
                status=ArmStatus.TIMED_OUT, reason=f"no answer within {timeout:.1f}s"
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the arm's own failure is data for the orchestrator
            ctx.log.warning(
                "arm failed: %s: %s",
                type(exc).__name__,
                exc,
                extra={"task_id": request.task_id, "step_id": request.step_id},
            )
            output = ArmOutput(status=ArmStatus.FAILED, reason=f"{type(exc).__name__}: {exc}")
    return ArmResult(
        request_id=request.request_id,
        task_id=request.task_id,
        step_id=request.step_id,
        arm=arm.name,
        status=output.status,
        output=output.output,
        reason=output.reason,
        artifacts=output.artifacts,
        usage=output.usage,
        attempt=request.attempt,
        worker=ctx.worker_id,
        started_at=started,
        finished_at=_now(),
    )


def dead_letter(event: EventT[Any], error: CodecError, component: str) -> DeadLetter:
    message = event.message
    raw = message.headers or []
    pairs = raw.items() if isinstance(raw, Mapping) else raw
    headers = {
        str(k): (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)) for k, v in pairs
    }
    return DeadLetter(
        dead_letter_id=uuid.uuid4(),
        original_topic=message.topic,
        original_partition=message.partition,
        original_offset=message.offset,
        original_key=message.key if isinstance(message.key, bytes) else None,
        payload=message.value if isinstance(message.value, bytes) else b"",
        headers=headers,
        error_class=error.error_class,
        reason=str(error),
        component=component,
        ts=_now(),
    )


def build_arm_app(
    settings: Settings,
    arm: Arm,
    *,
    concurrency: int | None = None,
    worker_id: str | None = None,
) -> faust.App:
    """A Faust app whose one agent serves `arm`; run it with `faust.Worker(app).execute_...`.

    Arms are at least once (no tables, so transactions buy nothing): the result is acknowledged
    by the broker before the request counts as done.
    """
    app = create_app(settings, arm_group(arm.name), exactly_once=False)
    codec = Codec.from_settings(settings)
    requests = topic(app, settings, arm_requests(arm.name))
    results = topic(app, settings, ARM_RESULTS)
    dlq = topic(app, settings, DLQ)
    ctx = ArmContext(settings, worker_id or default_worker_id(arm.name), arm.name)
    component = f"arm.{arm.name}"
    results_name = full_name(settings, ARM_RESULTS)
    setup_lock = asyncio.Lock()
    setup_done = False

    async def ensure_setup() -> None:
        # Once per worker, before the first request; concurrent agent instances wait for it.
        nonlocal setup_done
        async with setup_lock:
            if not setup_done:
                await arm.setup(ctx)
                setup_done = True

    @app.agent(requests, concurrency=concurrency or settings.arm_concurrency)
    async def serve(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        await ensure_setup()
        async for event in stream.events():
            try:
                request = codec.decode_model(event.value, topic=event.message.topic)
                if not isinstance(request, ArmRequest):
                    raise_mismatch(type(request).__name__)
            except CodecError as exc:
                ARM_DEAD_LETTERS.labels(arm.name).inc()
                ctx.log.warning(
                    "dead-lettered a request: %s", exc, extra={"offset": event.message.offset}
                )
                letter = dead_letter(event, exc, component)
                fut = await dlq.send(key=event.key, value=codec.encode(letter, topic=dlq.topics[0]))
                await fut
                continue
            assert isinstance(request, ArmRequest)
            began = time.perf_counter()
            result = await run_request(arm, request, ctx)
            elapsed = time.perf_counter() - began
            ARM_REQUESTS.labels(arm.name, result.status.value).inc()
            ARM_DURATION.labels(arm.name).observe(elapsed)
            # Wait for the broker's ack: only then may the request's offset be committed.
            fut = await results.send(
                key=str(request.task_id).encode(),
                value=codec.encode(result, topic=results_name),
            )
            await fut
            ctx.log.info(
                "answered %s in %.0f ms",
                result.status.value,
                elapsed * 1000,
                extra={
                    "task_id": request.task_id,
                    "tenant_id": request.tenant_id,
                    "step_id": request.step_id,
                    "attempt": request.attempt,
                },
            )
            yield None

    @app.on_before_shutdown.connect
    async def _close(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await arm.close()
        await ctx.aclose()

    return app


def raise_mismatch(name: str) -> None:
    from octollm.codec.errors import SchemaMismatch

    raise SchemaMismatch(f"expected an ArmRequest, got a {name}")
