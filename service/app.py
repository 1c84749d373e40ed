"""The HTTP layer: FastAPI routes over the inference core (batcher, model manager, feature store).

Routes stay thin; domain errors map to HTTP answers in one exception handler."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from typing import Annotated, Container

import numpy as np
import orjson
from fastapi import Body, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, StrictFloat, StrictInt, StrictStr

from service.batcher import DynamicBatcher, ScoreJob
from service.embedded_redis import EmbeddedRedis
from service.errors import InvalidInput, PayloadTooLarge, ServiceError, UnknownScenario
from service.metrics import ServiceMetrics
from service.models import ModelManager
from service.settings import Settings
from service.store import Behaviour, RedisFeatureStore

log = logging.getLogger(__name__)

RawId = StrictStr | StrictInt


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: RawId
    scenario: RawId
    candidates: list[RawId]
    features: dict[str, RawId] = {}


class ModelRef(BaseModel):
    name: str
    version: str


class ScoreResponse(BaseModel):
    scores: list[float]
    model: ModelRef
    history_length: int
    cold_start: bool
    degraded: bool


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: RawId
    item_id: RawId
    scenario: RawId
    timestamp: StrictFloat | StrictInt | None = None


def score_response(scores: np.ndarray | list[float], model_name: str, model_version: str, history_length: int,
                   cold_start: bool, degraded: bool) -> Response:
    """The /score answer (`ScoreResponse`'s shape), serialised by orjson straight from the score
    array: FastAPI's response-model path would validate and convert every float again."""
    body = {"scores": scores, "model": {"name": model_name, "version": model_version},
            "history_length": history_length, "cold_start": cold_start, "degraded": degraded}
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


class BodyLimit:
    """ASGI middleware: 413 for bodies over the limit, declared or streamed."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _send_error(send, PayloadTooLarge(f"request body over {self.max_bytes} bytes", "body"))
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise PayloadTooLarge(f"request body over {self.max_bytes} bytes", "body")
            return message

        try:
            await self.app(scope, limited_receive, send)
        except PayloadTooLarge as error:
            await _send_error(send, error)


async def _send_error(send, error: ServiceError) -> None:
    response = JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)
    await send({"type": "http.response.start", "status": response.status_code,
                "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def _check_id(value, field: str, max_length: int) -> str:
    text = str(value)
    if not text:
        raise InvalidInput(f"{field} must not be empty", field)
    if len(text) > max_length:
        raise InvalidInput(f"{field} is longer than {max_length} characters", field)
    return text


def check_score_request(body: ScoreRequest, settings: Settings, scenarios: Container[str]
                        ) -> tuple[str, str, list[str], dict[str, str]]:
    """(user id, scenario, candidates, features) of a parsed /score body, or InvalidInput /
    UnknownScenario naming the field."""
    user_id = _check_id(body.user_id, "user_id", settings.max_id_length)
    scenario = str(body.scenario)
    if scenario not in scenarios:
        raise UnknownScenario(f"unknown scenario {scenario!r}; valid: {list(scenarios)}", "scenario")
    if not body.candidates:
        raise InvalidInput("candidates must not be empty", "candidates")
    if len(body.candidates) > settings.max_candidates:
        raise InvalidInput(f"at most {settings.max_candidates} candidates per request, got "
                           f"{len(body.candidates)}", "candidates")
    candidates = [_check_id(c, f"candidates[{i}]", settings.max_id_length) for i, c in enumerate(body.candidates)]
    features = {_check_id(k, "features", settings.max_id_length): _check_id(v, f"features.{k}", settings.max_id_length)
                for k, v in body.features.items()}
    return user_id, scenario, candidates, features


class Core:
    """Everything a request handler needs, opened and closed by the lifespan."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.metrics = ServiceMetrics()
        self.models = ModelManager(settings, self.metrics)
        self.embedded: EmbeddedRedis | None = None
        self.store: RedisFeatureStore | None = None
        self.batcher: DynamicBatcher | None = None
        self.ready = False
        self._tasks: list[asyncio.Task] = []

    async def open(self) -> None:
        s = self.settings
        url = s.redis_url
        if not url:
            self.embedded = EmbeddedRedis(s.embedded_redis_port)
            url = await asyncio.to_thread(self.embedded.start)
            log.info("embedded Redis at %s", url)
        self.store = RedisFeatureStore(url, s.history_length, s.history_ttl_seconds, s.redis_prefix,
                                       timeout_seconds=s.redis_timeout_ms / 1000)
        await self.models.reload()
        self.batcher = DynamicBatcher(self.store, lambda: self.models.current, self.metrics,
                                      s.max_batch_requests, s.max_batch_rows, s.max_wait_us, s.queue_size,
                                      redis_timeout_seconds=s.redis_timeout_ms / 1000)
        self.batcher.start()
        self._tasks.append(asyncio.create_task(self.models.watch(), name="model-watch"))
        self.ready = True

    async def close(self) -> None:
        self.ready = False
        if self.batcher:
            await self.batcher.stop()
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


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    core = Core(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await core.open()
        try:
            yield
        finally:
            await core.close()

    app = FastAPI(title="SAINet scoring service", lifespan=lifespan)
    app.state.core = core
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, error: ServiceError):
        return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)

    @app.post("/score", response_model=ScoreResponse)
    async def score(body: ScoreRequest, core: CoreDep):
        started, scenario_label, status = time.perf_counter(), "invalid", 500
        try:
            s = core.settings
            model = core.models.current
            user_id, scenario, candidates, features = check_score_request(body, s, model.artifact.scenario_index)
            scenario_label = scenario
            job = ScoreJob(user_id, scenario, candidates, features,
                           deadline=started + s.request_timeout_ms / 1000,
                           future=asyncio.get_running_loop().create_future())
            result = await core.batcher.submit(job)
            status = 200
            return score_response(result.scores, result.model_name, result.model_version, result.history_length,
                                  result.cold_start, result.degraded)
        except ServiceError as error:
            status = error.status_code
            raise
        finally:
            core.metrics.request_latency.labels(endpoint="/score", scenario=scenario_label,
                                                status=str(status)).observe(time.perf_counter() - started)

    @app.post("/events")
    async def events(body: Annotated[Event | list[Event], Body()], core: CoreDep):
        started, status = time.perf_counter(), 500
        try:
            s = core.settings
            batch = body if isinstance(body, list) else [body]
            if not batch:
                raise InvalidInput("events must not be empty", "events")
            if len(batch) > s.max_events:
                raise InvalidInput(f"at most {s.max_events} events per request", "events")
            now = time.time()
            appended = [(_check_id(e.user_id, "user_id", s.max_id_length),
                         Behaviour(_check_id(e.item_id, "item_id", s.max_id_length),
                                   _check_id(e.scenario, "scenario", s.max_id_length),
                                   float(e.timestamp if e.timestamp is not None else now)))
                        for e in batch]
            try:
                await asyncio.wait_for(core.store.append(appended), s.redis_timeout_ms / 1000 * 4)
            except Exception as error:
                status = 503
                log.warning("append to the feature store failed: %r", error)
                return JSONResponse({"detail": [{"msg": "feature store unavailable; events not stored",
                                                 "type": "StoreUnavailable"}]}, status_code=503,
                                    headers={"Retry-After": "1"})
            core.metrics.events.inc(len(appended))
            status = 200
            return {"appended": len(appended)}
        except ServiceError as error:
            status = error.status_code
            raise
        finally:
            core.metrics.request_latency.labels(endpoint="/events", scenario="all",
                                                status=str(status)).observe(time.perf_counter() - started)

    @app.get("/v2/health/live")
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready(core: CoreDep):
        store_ok = core.store is not None and await core.store.ping()
        is_ready = core.ready and core.models.loaded and store_ok
        return JSONResponse({"ready": is_ready, "model_loaded": core.models.loaded, "redis": store_ok},
                            status_code=200 if is_ready else 503)

    @app.get("/v2/models")
    async def models(core: CoreDep):
        return {"models": [core.models.describe()]}

    @app.post("/v2/models/reload")
    async def reload(core: CoreDep):
        result = await core.models.reload(force=False)
        return JSONResponse(result, status_code=409 if result["status"] == "failed" else 200)

    @app.get("/metrics")
    async def metrics(core: CoreDep):
        return PlainTextResponse(generate_latest(core.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
