"""Dynamic batching: concurrent /score requests gathered into one Redis round trip and one ONNX
Runtime run, bounded by requests, candidate rows and a maximum wait. Encoding and inference run in
a worker thread, never on the event loop."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from service.errors import DeadlineExceeded, InvalidInput, Overloaded
from service.inference import LoadedModel
from service.metrics import ServiceMetrics
from service.store import FeatureStore, UserState

log = logging.getLogger(__name__)

# A request waits at most until its deadline plus this long: a batch that started in time may finish
# a little after it, but no request waits for ever, whatever happens to the batcher.
ANSWER_GRACE_SECONDS = 1.0


@dataclass
class ScoreJob:
    user_id: str
    scenario: str
    candidates: list[str]
    features: dict[str, str]
    deadline: float
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class ScoreResult:
    scores: np.ndarray       # [C] float32
    model_name: str
    model_version: str
    history_length: int
    cold_start: bool
    degraded: bool


class DynamicBatcher:
    def __init__(self, store: FeatureStore, current_model: Callable[[], LoadedModel], metrics: ServiceMetrics,
                 max_batch_requests: int, max_batch_rows: int, max_wait_us: int, queue_size: int,
                 redis_timeout_seconds: float):
        self.store = store
        self.current_model = current_model
        self.metrics = metrics
        self.max_batch_requests = max_batch_requests
        self.max_batch_rows = max_batch_rows
        self.max_wait = max_wait_us / 1e6
        self.redis_timeout = redis_timeout_seconds
        self.queue: asyncio.Queue[ScoreJob] = asyncio.Queue(maxsize=queue_size)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._carry: ScoreJob | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False

    def start(self) -> None:
        """Starts the batching loop under supervision: should it ever end by an exception, it is
        logged, counted and started again."""
        self._task = asyncio.create_task(self._run(), name="batcher")
        self._task.add_done_callback(self._restart_if_died)

    def _restart_if_died(self, task: asyncio.Task) -> None:
        if self._stopping or task.cancelled():
            return
        log.error("the batching loop died; restarting it", exc_info=task.exception())
        self.metrics.batcher_restarts.inc()
        self.start()

    async def stop(self, timeout_seconds: float = 10.0) -> None:
        """Drains what is queued (for at most `timeout_seconds`), then stops."""
        deadline = time.perf_counter() + timeout_seconds
        while (not self.queue.empty() or self._carry is not None) and time.perf_counter() < deadline:
            await asyncio.sleep(0.005)
        self._stopping = True
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    async def submit(self, job: ScoreJob) -> ScoreResult:
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            self.metrics.rejected.labels(reason="queue_full").inc()
            raise Overloaded("the scoring queue is full; retry shortly") from None
        self.metrics.queue_depth.set(self.queue.qsize())
        wait = max(0.0, job.deadline - time.perf_counter()) + ANSWER_GRACE_SECONDS
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), wait)
        except TimeoutError:
            job.future.cancel()     # the batcher skips it if it still comes to it
            self.metrics.rejected.labels(reason="deadline").inc()
            raise DeadlineExceeded("no answer within the request's deadline") from None

    async def _collect(self) -> list[ScoreJob]:
        first = self._carry or await self.queue.get()
        self._carry = None
        batch, rows = [first], len(first.candidates)
        give_up = time.perf_counter() + self.max_wait
        while len(batch) < self.max_batch_requests:
            try:
                job = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = give_up - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            if rows + len(job.candidates) > self.max_batch_rows:
                self._carry = job
                break
            batch.append(job)
            rows += len(job.candidates)
        self.metrics.queue_depth.set(self.queue.qsize())
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch: list[ScoreJob] = []
            try:
                batch = await self._collect()
                await self._score(loop, batch)
            except Exception as error:  # never let one bad batch kill the batcher
                log.exception("scoring batch failed")
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(error)

    async def _score(self, loop, batch: list[ScoreJob]) -> None:
        now = time.perf_counter()
        live = []
        for job in batch:
            self.metrics.stage_latency.labels(stage="queue_wait").observe(now - job.enqueued)
            if job.future.cancelled():
                continue
            if now > job.deadline:
                self.metrics.rejected.labels(reason="deadline").inc()
                job.future.set_exception(DeadlineExceeded("the request waited past its deadline"))
                continue
            live.append(job)
        if not live:
            return
        model = self.current_model()
        states = await self._fetch_states(live, model.artifact.history_length)
        valid, valid_states = [], []
        for job, state in zip(live, states):
            if job.scenario in model.artifact.scenario_index:
                valid.append(job)
                valid_states.append(state)
            else:  # the model changed between validation and scoring
                job.future.set_exception(InvalidInput(
                    f"unknown scenario {job.scenario!r}; valid: {model.artifact.scenarios}", "scenario"))
        if not valid:
            return
        started = time.perf_counter()
        scores, history_lengths, padded_rows = await loop.run_in_executor(
            self.executor, self._infer, model, valid, valid_states)
        self.metrics.stage_latency.labels(stage="inference").observe(time.perf_counter() - started)
        self.metrics.batch_requests.observe(len(valid))
        self.metrics.batch_rows.observe(padded_rows)
        for row, job in enumerate(valid):
            history_length = history_lengths[row]
            cold = history_length == 0
            if cold:
                self.metrics.cold_start.inc()
            degraded = valid_states[row].degraded
            if degraded:
                self.metrics.degraded.inc()
            if not job.future.done():
                job.future.set_result(ScoreResult(
                    scores=scores[row], model_name=model.name,
                    model_version=model.version, history_length=history_length, cold_start=cold,
                    degraded=degraded))

    async def _fetch_states(self, jobs: list[ScoreJob], history_length: int) -> list[UserState]:
        """One state per job. A user the store could not read (a cluster node down) comes back
        degraded from the store; should the whole fetch fail, every job is degraded."""
        started = time.perf_counter()
        try:
            states = await asyncio.wait_for(self.store.fetch([j.user_id for j in jobs], history_length),
                                            self.redis_timeout)
        except Exception as error:  # Redis down, slow or failing: score as cold start
            log.warning("feature store unavailable, scoring %d requests as cold start: %r", len(jobs), error)
            states = [UserState(degraded=True) for _ in jobs]
        self.metrics.stage_latency.labels(stage="redis_fetch").observe(time.perf_counter() - started)
        return states

    @staticmethod
    def _infer(model: LoadedModel, jobs: list[ScoreJob], states: list[UserState]
               ) -> tuple[list[np.ndarray], list[int], int]:
        """(scores [C_i] per job, history length per job, candidate rows computed). Requests of very
        different C run in separate ONNX Runtime calls (see `width_groups`), so a 50-candidate
        request is never padded to 500."""
        scores: list[np.ndarray] = [np.empty(0, np.float32)] * len(jobs)
        history_lengths = [0] * len(jobs)
        padded_rows = 0
        for group in width_groups([len(j.candidates) for j in jobs]):
            encoded = model.artifact.encode(
                [jobs[i].scenario for i in group], [states[i].history for i in group],
                [{**states[i].features, **jobs[i].features} for i in group], [jobs[i].candidates for i in group])
            group_scores = np.asarray(model.run(encoded.inputs))
            padded_rows += group_scores.size
            for row, i in enumerate(group):
                scores[i] = group_scores[row, :len(jobs[i].candidates)]
                history_lengths[i] = encoded.history_lengths[row]
        return scores, history_lengths, padded_rows


def width_groups(widths: list[int], slack: float = 1.25) -> list[list[int]]:
    """Splits requests (by index) into groups whose padded size, largest C x requests, stays within
    `slack` x their real candidate rows. Requests are taken in order of C, so each group is a run of
    similar widths. One ONNX Runtime call per group costs little: on CPU one request per call
    runs at about 90% of the batched rate (docs/performance.md), while padding costs in full."""
    groups: list[list[int]] = []
    group: list[int] = []
    real = 0
    for i in sorted(range(len(widths)), key=widths.__getitem__):
        if group and widths[i] * (len(group) + 1) > slack * (real + widths[i]):
            groups.append(group)
            group, real = [], 0
        group.append(i)
        real += widths[i]
    if group:
        groups.append(group)
    return groups
