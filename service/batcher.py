"""Dynamic batching: concurrent /score requests gathered into Redis round trips (several in flight)
and ONNX Runtime runs (one at a time, in a worker thread, never on the event loop), bounded by
requests and candidate rows; each request keeps its own deadline (see `DynamicBatcher`)."""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from service.breaker import CircuitBreaker
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
    features: dict[str, str | float]    # raw ids as text; numeric features as floats
    deadline: float
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    started: bool = False              # taken into a fetch: it runs unless it is cancelled
    state: UserState | None = None     # what the fetch read


class CostEstimate:
    """Recent costs: the wall time per request of the inference stage while it runs back to back
    (the service rate the door estimates waits from: it includes what the event loop takes from the
    same core), and the time of one Redis fetch. Each is the median of the last `window` samples,
    so one slow run (a pause, a stuck worker) does not move it."""

    def __init__(self, seconds_per_request: float = 0.001, fetch_seconds: float = 0.001, window: int = 15):
        self._per_request: deque[float] = deque([seconds_per_request], maxlen=window)
        self._fetches: deque[float] = deque([fetch_seconds], maxlen=window)
        self.seconds_per_request = seconds_per_request
        self.fetch_seconds = fetch_seconds
        self._previous_start: float | None = None
        self._previous_requests = 0
        self._back_to_back = False

    def observe_run(self, started: float, finished: float, requests: int, more_waiting: bool) -> None:
        if self._back_to_back and self._previous_start is not None:
            sample = (started - self._previous_start) / self._previous_requests
        else:   # the worker was idle before this run: only its own time is known, a lower bound
            sample = (finished - started) / requests
        self._per_request.append(sample)
        self.seconds_per_request = statistics.median(self._per_request)
        self._previous_start, self._previous_requests, self._back_to_back = started, requests, more_waiting

    def observe_fetch(self, seconds: float) -> None:
        self._fetches.append(seconds)
        self.fetch_seconds = statistics.median(self._fetches)


@dataclass
class ScoreResult:
    scores: np.ndarray       # [C] float32
    model_name: str
    model_version: str
    history_length: int
    cold_start: bool
    degraded: bool


class DynamicBatcher:
    """Three stages, each request with its own deadline:

    1. `submit` puts an admitted request in `pending` (`admission_refusal` is asked first, at the
       door, before the body is parsed);
    2. the fetch stage takes what is pending into one Redis round trip, with up to
       `max_fetches_in_flight` round trips at once, so a slow Redis costs latency, not throughput;
       while the inference worker is busy and a fetch is already out, it gathers for at most
       `max_wait` (an upper bound, never a wait when the worker is free);
    3. the inference stage runs everything fetched so far as one ONNX Runtime run (bounded by
       requests and candidate rows) in the worker thread, and starts again at once.

    Pending requests are served oldest first until the oldest has waited `lifo_after_seconds`; then
    newest first (adaptive LIFO), so under overload fresh requests are answered in time rather than
    every request late. A request that can no longer finish by its deadline is answered 503 when it
    is found, and a request never started is answered 503 at its own deadline."""

    def __init__(self, store: FeatureStore, current_model: Callable[[], LoadedModel], metrics: ServiceMetrics,
                 max_batch_requests: int, max_batch_rows: int, max_wait_us: int, queue_size: int,
                 redis_timeout_seconds: float, max_fetches_in_flight: int = 4,
                 lifo_after_seconds: float = 0.25, breaker: CircuitBreaker | None = None,
                 max_queue_delay_seconds: float = float("inf")):
        self.store = store
        self.current_model = current_model
        self.metrics = metrics
        self.max_batch_requests = max_batch_requests
        self.max_batch_rows = max_batch_rows
        self.max_wait = max_wait_us / 1e6
        self.redis_timeout = redis_timeout_seconds
        self.queue_size = queue_size
        self.lifo_after = lifo_after_seconds
        self.max_queue_delay = max_queue_delay_seconds
        self.breaker = breaker
        self.pending: deque[ScoreJob] = deque()
        self.ready: deque[ScoreJob] = deque()        # fetched, waiting for the worker
        self.fetching = 0                            # requests in fetches in flight
        self.fetch_slots = asyncio.Semaphore(max_fetches_in_flight)
        self.fetches_in_flight = 0
        self.inferring = 0                           # requests in the run on the worker now
        self._run_started = 0.0
        self.costs = CostEstimate()
        self._pending_changed = asyncio.Event()
        self._ready_changed = asyncio.Event()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._tasks: list[asyncio.Task] = []
        self._fetches: set[asyncio.Task] = set()
        self._stopping = False

    # -- admission ------------------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Requests admitted and not yet answered."""
        return len(self.pending) + self.fetching + len(self.ready) + self.inferring

    def estimated_seconds_to_answer(self) -> float:
        """How long a request arriving now would take: the work ahead of it at the recent cost per
        request, its own share, and a Redis round trip."""
        return (self.backlog + 1) * self.costs.seconds_per_request + self.costs.fetch_seconds

    def admission_refusal(self, budget_seconds: float) -> str | None:
        """None when a request with `budget_seconds` to its deadline can be taken, else the reason
        it cannot (a `sainet_rejected_total` reason). The work ahead is also held under
        `max_queue_delay`: under sustained overload a queue as long as the deadline only makes
        every answer late, while a short one keeps the worker just as busy."""
        if self.backlog >= self.queue_size:
            return "queue_full"
        # nothing ahead: the request starts at once, and refusing it would also stop the estimate
        # from ever learning that the service is fast again
        if self.backlog and self.estimated_seconds_to_answer() > min(budget_seconds, self.max_queue_delay):
            return "deadline_estimate"
        return None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Starts both stages under supervision: should one ever end by an exception, it is logged,
        counted and started again."""
        self._tasks = [self._supervise(self._fetch_loop, "fetcher"), self._supervise(self._infer_loop, "inference")]

    def _supervise(self, loop_function, name: str) -> asyncio.Task:
        task = asyncio.create_task(loop_function(), name=f"batcher-{name}")

        def restart_if_died(done: asyncio.Task) -> None:
            if self._stopping or done.cancelled():
                return
            log.error("the batcher's %s stage died; restarting it", name, exc_info=done.exception())
            self.metrics.batcher_restarts.inc()
            self._tasks = [t for t in self._tasks if t is not done] + [self._supervise(loop_function, name)]

        task.add_done_callback(restart_if_died)
        return task

    async def stop(self, timeout_seconds: float = 10.0) -> None:
        """Drains what is admitted (for at most `timeout_seconds`), then stops."""
        deadline = time.perf_counter() + timeout_seconds
        while self.backlog and time.perf_counter() < deadline:
            await asyncio.sleep(0.005)
        self._stopping = True
        for task in [*self._tasks, *self._fetches]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._fetches, return_exceptions=True)
        self.executor.shutdown(wait=True)

    # -- stage 1: submit ------------------------------------------------------------------------

    async def submit(self, job: ScoreJob) -> ScoreResult:
        if self.backlog >= self.queue_size:    # admission normally refuses first, at the door
            self.metrics.rejected.labels(reason="queue_full").inc()
            raise Overloaded("the scoring queue is full; retry shortly") from None
        self.pending.append(job)
        self._pending_changed.set()
        self.metrics.queue_depth.set(len(self.pending))
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), max(0.0, job.deadline - time.perf_counter()))
        except TimeoutError:
            pass
        if job.started and not job.future.done():   # a started batch may finish a little late
            try:
                return await asyncio.wait_for(asyncio.shield(job.future), ANSWER_GRACE_SECONDS)
            except TimeoutError:
                pass
        if job.future.done() and not job.future.cancelled():   # answered (or refused) meanwhile
            return job.future.result()
        try:
            self.pending.remove(job)
        except ValueError:
            pass
        job.future.cancel()     # the stages skip it if they still come to it
        self.metrics.rejected.labels(reason="deadline").inc()
        raise DeadlineExceeded("no answer within the request's deadline") from None

    # -- stage 2: fetch -------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        while True:
            await self.fetch_slots.acquire()
            try:
                jobs = await self._collect()
            except BaseException:
                self.fetch_slots.release()
                raise
            task = asyncio.create_task(self._fetch(jobs))
            self._fetches.add(task)
            task.add_done_callback(self._fetches.discard)

    def _worker_free(self) -> bool:
        return self.inferring == 0 and not self.ready

    def _seconds_until_worker_free(self) -> float:
        """When the worker will have run what it is running and what is fetched already, by the
        recent cost per request."""
        if self._worker_free():
            return 0.0
        busy_until = self._run_started + self.inferring * self.costs.seconds_per_request
        return max(0.0, busy_until - time.perf_counter()) + len(self.ready) * self.costs.seconds_per_request

    def _should_dispatch(self) -> float:
        """0 when the pending requests should be fetched now, else the longest wait before they
        should: at once when the worker is free, when a batch is full, or when the worker will be
        free within one fetch (so the fetch lands as the worker frees, and it never idles); never
        later than `max_wait` after the oldest arrived."""
        if len(self.pending) >= self.max_batch_requests:
            return 0.0
        until_free = self._seconds_until_worker_free() - self.costs.fetch_seconds
        until_window = self.pending[0].enqueued + self.max_wait - time.perf_counter()
        return max(0.0, min(until_free, until_window))

    async def _collect(self) -> list[ScoreJob]:
        """The next requests to fetch (see `_should_dispatch`)."""
        while True:
            while not self.pending:
                self._pending_changed.clear()
                await self._pending_changed.wait()
            wait = self._should_dispatch()
            if wait <= 0:
                return self._take_pending()
            self._pending_changed.clear()
            self._ready_changed.clear()
            changes = [asyncio.ensure_future(self._pending_changed.wait()),
                       asyncio.ensure_future(self._ready_changed.wait())]
            try:
                await asyncio.wait(changes, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for change in changes:
                    change.cancel()

    def _take_pending(self) -> list[ScoreJob]:
        now = time.perf_counter()
        newest_first = bool(self.pending) and now - self.pending[0].enqueued > self.lifo_after
        batch, rows = [], 0
        # a request that cannot be fetched and run before its deadline is answered now
        cannot_finish = now + self.costs.fetch_seconds + self.costs.seconds_per_request
        while self.pending and len(batch) < self.max_batch_requests:
            job = self.pending[-1] if newest_first else self.pending[0]
            if job.future.done():
                self._drop(newest_first)
                continue
            if cannot_finish > job.deadline:
                self._drop(newest_first)
                self.metrics.rejected.labels(reason="deadline").inc()
                job.future.set_exception(DeadlineExceeded("the request cannot be answered within its deadline"))
                continue
            if batch and rows + len(job.candidates) > self.max_batch_rows:
                break
            self._drop(newest_first)
            job.started = True
            self.metrics.stage_latency.labels(stage="queue_wait").observe(now - job.enqueued)
            batch.append(job)
            rows += len(job.candidates)
        self.metrics.queue_depth.set(len(self.pending))
        return batch

    def _drop(self, newest: bool) -> None:
        if newest:
            self.pending.pop()
        else:
            self.pending.popleft()

    async def _fetch(self, jobs: list[ScoreJob]) -> None:
        self.fetching += len(jobs)
        self.fetches_in_flight += 1
        self.metrics.fetches_in_flight.set(self.fetches_in_flight)
        try:
            if jobs:
                states = await self._fetch_states(jobs, self.current_model().artifact.history_length)
                for job, state in zip(jobs, states):
                    job.state = state
        except Exception as error:    # never let one fetch lose its requests
            log.exception("fetching a batch failed")
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)
        finally:
            self.fetching -= len(jobs)
            self.fetches_in_flight -= 1
            self.metrics.fetches_in_flight.set(self.fetches_in_flight)
            self.fetch_slots.release()
        self.ready.extend(job for job in jobs if job.state is not None and not job.future.done())
        self._ready_changed.set()

    async def _fetch_states(self, jobs: list[ScoreJob], history_length: int) -> list[UserState]:
        """One state per job. A user the store could not read (a cluster node down) comes back
        degraded from the store; should the whole fetch fail, time out or the breaker be open,
        every job is degraded (scored as a cold start)."""
        if self.breaker is not None and not self.breaker.allows():
            self.metrics.rejected.labels(reason="breaker_open").inc()
            return [UserState(degraded=True) for _ in jobs]
        started = time.perf_counter()
        # the Redis budget is this fetch's own, never longer than its requests can wait
        budget = min(self.redis_timeout, max(0.0, max(j.deadline for j in jobs) - started))
        fetch = asyncio.ensure_future(self.store.fetch([j.user_id for j in jobs], history_length))
        try:
            # shielded: past the budget the fetch is abandoned, not cancelled, so its reply still
            # lands and its connection stays usable (the store bounds how late, see its read sockets)
            states = await asyncio.wait_for(asyncio.shield(fetch), budget)
            if self.breaker is not None:
                self.breaker.record_success()
        except Exception as error:  # Redis down, slow or failing: score as cold start
            fetch.add_done_callback(_ignore_outcome)
            log.warning("feature store unavailable, scoring %d requests as cold start: %r", len(jobs), error)
            states = [UserState(degraded=True) for _ in jobs]
            if self.breaker is not None:
                self.breaker.record_failure()
        elapsed = time.perf_counter() - started
        self.costs.observe_fetch(elapsed)
        self.metrics.stage_latency.labels(stage="redis_fetch").observe(elapsed)
        return states

    # -- stage 3: inference ---------------------------------------------------------------------

    async def _infer_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.ready:
                self._ready_changed.clear()
                await self._ready_changed.wait()
            batch = self._take_ready()
            self._run_started = time.perf_counter()
            try:
                await self._score(loop, batch)
            except Exception as error:  # never let one bad batch kill the stage
                log.exception("scoring batch failed")
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(error)
            finally:
                self.inferring = 0
                self._ready_changed.set()     # the worker is free: the fetch stage may dispatch

    def _take_ready(self) -> list[ScoreJob]:
        batch, rows = [], 0
        while self.ready and len(batch) < self.max_batch_requests:
            job = self.ready[0]
            if batch and rows + len(job.candidates) > self.max_batch_rows:
                break
            self.ready.popleft()
            batch.append(job)
            rows += len(job.candidates)
        self.inferring = len(batch)
        return batch

    async def _score(self, loop, batch: list[ScoreJob]) -> None:
        now = time.perf_counter()
        live = []
        for job in batch:
            if job.future.done():
                continue
            if now > job.deadline:
                self.metrics.rejected.labels(reason="deadline").inc()
                job.future.set_exception(DeadlineExceeded("the request waited past its deadline"))
                continue
            live.append(job)
        if not live:
            return
        model = self.current_model()
        valid = []
        for job in live:
            if job.scenario in model.artifact.scenario_index:
                valid.append(job)
            else:  # the model changed between validation and scoring
                job.future.set_exception(InvalidInput(
                    f"unknown scenario {job.scenario!r}; valid: {model.artifact.scenarios}", "scenario"))
        if not valid:
            return
        started = time.perf_counter()
        scores, history_lengths, padded_rows = await loop.run_in_executor(
            self.executor, self._infer, model, valid, [job.state for job in valid])
        finished = time.perf_counter()
        # work waiting when this run ends (fetched, being fetched or pending): the next run is back
        # to back, and the time until it starts is part of the cost of this one
        self.costs.observe_run(started, finished, len(valid),
                               more_waiting=bool(self.ready or self.pending or self.fetching))
        self.metrics.stage_latency.labels(stage="inference").observe(finished - started)
        self.metrics.batch_requests.observe(len(valid))
        self.metrics.batch_rows.observe(padded_rows)
        for row, job in enumerate(valid):
            history_length = history_lengths[row]
            cold = history_length == 0
            if cold:
                self.metrics.cold_start.inc()
            degraded = job.state.degraded
            if degraded:
                self.metrics.degraded.inc()
            if not job.future.done():
                job.future.set_result(ScoreResult(
                    scores=scores[row], model_name=model.name,
                    model_version=model.version, history_length=history_length, cold_start=cold,
                    degraded=degraded))

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


def _ignore_outcome(task: asyncio.Future) -> None:
    """Reads an abandoned fetch's outcome, so that a late failure is not logged as never retrieved."""
    if not task.cancelled():
        task.exception()


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
