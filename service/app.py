"""The HTTP layer: FastAPI routes over the inference core (batcher, model manager, feature store).

Lifecycle per request: `RequestGuard` reads the body (size and time bounded), the route parses it
(strict JSON, then the pydantic models of `service.requests`), the core predicts, and every domain
error becomes an answer through the one table in `service.http_errors`."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from contextlib import asynccontextmanager
from typing import Annotated

import numpy as np
import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.admission import DEADLINE, AdmissionGate, Door
from service.batcher import DynamicBatcher, ScoreJob
from service.breaker import CircuitBreaker
from service.embedded_redis import EmbeddedRedis
from service.errors import (
    DeadlineExceeded,
    Forbidden,
    InvalidInput,
    MalformedBody,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    StoreUnavailable,
    Unauthenticated,
)
from service.http_errors import (
    documented,
    error_detail,
    error_response,
    json_response,
    send_error,
    status_of,
)
from service.metrics import ServiceMetrics
from service.models import ModelManager
from service.requests import RequestModels
from service.settings import Settings
from service.store import Behaviour, NewEvent, RedisClusterFeatureStore, RedisFeatureStore

log = logging.getLogger(__name__)


def score_response(scores: np.ndarray | list[float], model_name: str, model_version: str, history_length: int,
                   cold_start: bool, degraded: bool) -> Response:
    """The /score answer (`ScoreResponse`'s shape), serialised by orjson straight from the score
    array: FastAPI's response-model path would validate and convert every float again."""
    body = {"scores": scores, "model": {"name": model_name, "version": model_version},
            "history_length": history_length, "cold_start": cold_start, "degraded": degraded}
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


class RequestGuard:
    """ASGI middleware: reads the whole body before any route runs, answering 413 past `max_bytes`
    (declared or streamed) and 408 when it has not arrived `timeout_seconds` after the headers;
    then hands the app the buffered body. A slow or huge upload never reaches a handler."""

    def __init__(self, app, max_bytes: int, timeout_seconds: float, on_refused=None):
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout_seconds
        self.on_refused = on_refused      # a Counter labelled by status, or None

    async def _refuse(self, send, error: ServiceError) -> None:
        if self.on_refused is not None:
            self.on_refused.labels(status=str(status_of(error)[0])).inc()
        await send_error(send, error)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = PayloadTooLarge(f"request body over {self.max_bytes} bytes", "body")
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send, too_large)
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_bytes:
                        return await self._refuse(send, too_large)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            return await self._refuse(send, RequestTimeout(
                f"the request body did not arrive within {self.timeout:g} s", "body"))
        replayed = False

        async def buffered_receive():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, buffered_receive, send)


class Core:
    """Everything a request handler needs, opened and closed by the lifespan."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.metrics = ServiceMetrics()
        self.models = ModelManager(settings, self.metrics)
        self.embedded: EmbeddedRedis | None = None
        self.store: RedisFeatureStore | None = None
        self.batcher: DynamicBatcher | None = None
        self.breaker: CircuitBreaker | None = None
        self.door = Door(settings, self.metrics, lambda: self.batcher)
        self.ready = False
        self._tasks: list[asyncio.Task] = []

    async def open(self) -> None:
        s = self.settings
        url = s.redis_url
        if not url:
            self.embedded = EmbeddedRedis(s.embedded_redis_port)
            url = await asyncio.to_thread(self.embedded.start)
            log.info("embedded Redis at %s", url)
        store_class = RedisClusterFeatureStore if s.redis_cluster else RedisFeatureStore
        self.store = store_class(url, s.history_length, s.history_ttl_seconds, s.redis_prefix,
                                 timeout_seconds=s.redis_timeout_ms / 1000,
                                 on_undecodable=self.metrics.undecodable_entries.inc,
                                 read_connections=s.redis_read_connections,
                                 write_connections=s.redis_write_connections,
                                 pool_timeout_seconds=s.redis_pool_timeout_ms / 1000,
                                 dedupe_seconds=s.event_dedupe_seconds)
        self.breaker = CircuitBreaker(self.store.ping, failures_to_open=s.breaker_failures,
                                      max_open_seconds=s.breaker_max_open_ms / 1000,
                                      on_change=self._breaker_changed)
        # Opens a first connection now, so the first request does not pay the connect; a store that
        # is absent at start is not fatal (answers are degraded until it comes up).
        if not await self.store.ping():
            log.warning("the feature store did not answer at start: answers are degraded until it does")
        await self.models.reload()
        self.batcher = DynamicBatcher(self.store, lambda: self.models.current, self.metrics,
                                      s.max_batch_requests, s.max_batch_rows, s.max_wait_us, s.queue_size,
                                      redis_timeout_seconds=s.redis_timeout_ms / 1000,
                                      max_fetches_in_flight=s.max_fetches_in_flight, breaker=self.breaker,
                                      max_queue_delay_seconds=s.max_queue_delay_ms / 1000)
        self.batcher.start()
        self._tasks.append(asyncio.create_task(self.models.watch(), name="model-watch"))
        self._tasks.append(asyncio.create_task(self.door.watch_loop_lag(), name="loop-lag"))
        self.ready = True

    def _breaker_changed(self, is_open: bool) -> None:
        self.metrics.breaker_open.set(1 if is_open else 0)
        self.metrics.breaker_transitions.labels(to="open" if is_open else "closed").inc()
        self.metrics.feature_store_up.set(0 if is_open else 1)

    async def close(self) -> None:
        self.ready = False
        if self.batcher:
            await self.batcher.stop(timeout_seconds=self.settings.shutdown_grace_seconds)
        if self.breaker:
            await self.breaker.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.store:
            await self.store.close()
        if self.embedded:
            await asyncio.to_thread(self.embedded.stop)
        self.models.close()


async def get_core(request: Request) -> Core:
    # async: FastAPI runs sync dependencies in a thread pool, a thread hand-off per request
    return request.app.state.core


CoreDep = Annotated[Core, Depends(get_core)]
bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <token>`")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def token_matches(credentials: HTTPAuthorizationCredentials | None, token) -> bool:
    return credentials is not None and hmac.compare_digest(credentials.credentials.encode("utf-8", "surrogatepass"),
                                                           token.get_secret_value().encode())


def check_token(credentials: HTTPAuthorizationCredentials | None, token, what: str) -> None:
    """Unauthenticated without credentials, Forbidden with wrong ones; nothing when no token is set.
    The comparison takes constant time, and the token is never logged or echoed."""
    if token is None:
        return
    if credentials is None:
        raise Unauthenticated(f"{what} needs `Authorization: Bearer <token>`")
    if not token_matches(credentials, token):
        raise Forbidden(f"the bearer token is not valid for {what}")


# Answered by the HTTP server itself (`service.server`) before any route runs, on any route.
TRANSPORT_RESPONSES: dict[int | str, dict] = {
    408: {"description": "the request line, headers or body did not arrive in time"},
    431: {"description": "the request line and headers exceed SAINET_MAX_HEADER_BYTES"},
}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    core = Core(settings)
    bodies = RequestModels.for_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await core.open()
        try:
            yield
        finally:
            await core.close()

    app = FastAPI(title="SAINet scoring service", lifespan=lifespan, responses=TRANSPORT_RESPONSES,
                  description="Scores candidate items for a user in a scenario from their scenario-tagged "
                              "behaviour history. Limits and tokens: see the README.")
    app.state.core = core
    app.add_middleware(RequestGuard, max_bytes=settings.max_body_bytes, timeout_seconds=settings.body_timeout_seconds,
                       on_refused=core.metrics.refused_before_handler)
    app.add_middleware(AdmissionGate, door=core.door)     # outermost: before the body is even read

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, error: ServiceError):
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        # FastAPI's own handler echoes the input (which may not even encode as UTF-8); ours does not
        details = [error_detail(e.get("msg", "invalid"), e.get("type", "invalid"), e.get("loc", ()))
                   for e in error.errors()]
        return json_response({"detail": details}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        return json_response({"detail": [error_detail(str(error.detail), "HTTPException")]}, error.status_code,
                             dict(error.headers or {}))

    async def writer(credentials: Credentials, core: CoreDep) -> None:
        check_token(credentials, core.settings.write_token, "POST /events")

    async def admin(credentials: Credentials, core: CoreDep) -> None:
        check_token(credentials, core.settings.admin_token, "POST /v2/models/reload")

    guarded_by_body = documented(MalformedBody, InvalidInput, PayloadTooLarge, RequestTimeout)
    auth_errors = documented(Unauthenticated, Forbidden)

    @app.post("/score", summary="score candidates for a user in a scenario", response_model=bodies.score_response,
              responses={**guarded_by_body, **documented(Overloaded, DeadlineExceeded)})
    async def score(request: Request):
        # the hot route uses the app's own core directly: dependency injection costs about a tenth
        # of the event loop's time per request here
        started, scenario_label, status = time.perf_counter(), "invalid", 500
        try:
            s = core.settings
            model = core.models.current
            user_id, scenario, candidates, features = bodies.score(
                await request.body(), model.artifact.scenario_index, model.artifact.numeric_feature_names)
            scenario_label = scenario
            deadline = request.scope.get("state", {}).get(DEADLINE, started + s.request_timeout_ms / 1000)
            job = ScoreJob(user_id, scenario, candidates, features, deadline=deadline,
                           future=asyncio.get_running_loop().create_future())
            result = await core.batcher.submit(job)
            status = 200
            return score_response(result.scores, result.model_name, result.model_version, result.history_length,
                                  result.cold_start, result.degraded)
        except ServiceError as error:
            status = status_of(error)[0]
            raise
        finally:
            core.metrics.request_latency.labels(endpoint="/score", scenario=scenario_label,
                                                status=str(status)).observe(time.perf_counter() - started)

    @app.post("/events", summary="append behaviours to users' histories", response_model=bodies.events_response,
              dependencies=[Depends(writer)] if settings.write_token else [],
              responses={**guarded_by_body, **(auth_errors if settings.write_token else {}),
                         **documented(StoreUnavailable)})
    async def events(request: Request, core: CoreDep):
        started, status = time.perf_counter(), 500
        try:
            s = core.settings
            batch = bodies.events(await request.body())
            now = time.time()
            appended = [NewEvent(str(e.user_id), Behaviour(str(e.item_id), str(e.scenario),
                                                           float(e.timestamp if e.timestamp is not None else now)),
                                 e.event_id)
                        for e in batch]
            try:
                stored = await asyncio.wait_for(core.store.append(appended), s.redis_timeout_ms / 1000 * 4)
            except Exception as error:
                log.warning("append to the feature store failed: %r", error)
                raise StoreUnavailable(
                    "the feature store did not confirm the write: the events may or may not be stored. "
                    "Retrying with the same event_id values is safe (each is stored once)") from None
            core.metrics.events.inc(stored)
            status = 200
            return {"appended": stored, "duplicates": len(appended) - stored}
        except ServiceError as error:
            status = status_of(error)[0]
            raise
        finally:
            core.metrics.request_latency.labels(endpoint="/events", scenario="all",
                                                status=str(status)).observe(time.perf_counter() - started)

    @app.get("/v2/health/live", summary="the process answers")
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready", summary="a model is loaded and warmed up: the replica can answer",
             responses={503: {"description": "not ready: no model loaded yet, or shutting down",
                              "content": {"application/json": {}}}})
    async def ready(core: CoreDep):
        # Readiness means "can answer": a loaded, warmed model. A slow or absent Redis degrades answers
        # (cold-start scores) but must not make every replica unready at once, which an orchestrator
        # turns into an outage; it is reported here and in sainet_feature_store_up instead. While the
        # breaker is open its own probe watches Redis, so the check adds no Redis call.
        breaker_open = core.breaker is not None and core.breaker.is_open
        store_ok = not breaker_open and core.store is not None and await core.store.ping()
        core.metrics.feature_store_up.set(1 if store_ok else 0)
        is_ready = core.ready and core.models.loaded
        return json_response({"ready": is_ready, "model_loaded": core.models.loaded, "redis": store_ok,
                              "degraded": not store_ok, "breaker_open": breaker_open}, 200 if is_ready else 503)

    @app.get("/v2/models", summary="the model being served and the last load error")
    async def models(core: CoreDep, request: Request):
        # open to all (no declared security): the admin token only adds the file-system paths
        token = core.settings.admin_token
        reveal = token is None or token_matches(await bearer(request), token)
        return {"models": [core.models.describe(reveal_paths=reveal)]}

    @app.post("/v2/models/reload", summary="load the newest (or pinned) version now",
              dependencies=[Depends(admin)] if settings.admin_token else [],
              responses={**(auth_errors if settings.admin_token else {}),
                         409: {"description": "the version failed to load or its checks; the serving one stays",
                               "content": {"application/json": {}}}})
    async def reload(core: CoreDep):
        result = await core.models.reload(force=False)
        return json_response(result, 409 if result["status"] == "failed" else 200)

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics(core: CoreDep):
        return PlainTextResponse(generate_latest(core.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict:
        """The generated document with the request bodies (parsed by hand, so FastAPI cannot see
        them), the error body for every status and the scenarios of the model serving now."""
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description,
                                   routes=app.routes)
            bodies.document(document)
            app.openapi_schema = document
        artifact = core.models.current.artifact if core.models.loaded else None
        return bodies.with_scenarios(app.openapi_schema, list(artifact.scenarios) if artifact else None,
                                     artifact.numeric_feature_names if artifact else ())

    app.openapi = openapi
    return app
