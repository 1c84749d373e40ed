"""Service configuration: every setting is an environment variable `SAINET_<NAME>` (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAINET_", protected_namespaces=())

    model_dir: Path = Field(Path("artifacts"), description="model root holding <name>/<version>/")
    model_name: str | None = Field(None, description="model to serve; default: the only one under model_dir")
    model_version: str | None = Field(None, description="pin a version; default: the newest")
    reload_poll_seconds: float = Field(10.0, description="how often to look for a newer version (0 = never)")

    redis_url: str | None = Field(None, description="redis:// or rediss:// URL; unset = embedded Redis")
    redis_cluster: bool = Field(False, description="SAINET_REDIS_URL names a node of a Redis Cluster")
    redis_timeout_ms: float = Field(50.0, description="timeout of every Redis call")
    redis_read_connections: int = Field(64, gt=0, description="connections for /score's fetches and readiness "
                                        "pings (a blocking pool)")
    redis_write_connections: int = Field(32, gt=0, description="connections for /events writes, a pool of their "
                                         "own so write bursts cannot starve scoring")
    redis_pool_timeout_ms: float = Field(50.0, gt=0, description="longest wait for a free pooled connection")
    redis_prefix: str = "sainet"
    history_length: int = Field(50, description="behaviours kept per user in Redis")
    history_ttl_seconds: int | None = Field(None, description="expire idle histories after this long")
    event_dedupe_seconds: int = Field(86_400, gt=0, description="how long an /events event_id is remembered: "
                                      "a retry with the same id within it is stored once")
    embedded_redis_port: int = Field(6399, description="TCP port of the embedded Redis (127.0.0.1)")

    max_candidates: int = Field(1000, description="most candidates per /score request")
    max_events: int = Field(1000, description="most events per /events request")
    max_id_length: int = Field(256, description="longest user/item/scenario id accepted")
    max_body_bytes: int = Field(1_000_000, description="largest request body accepted (413 above)")
    max_features: int = Field(64, description="most entries in a /score request's features")
    max_header_bytes: int = Field(32_768, description="largest request line + headers accepted (431 above)")
    header_timeout_seconds: float = Field(5.0, description="time a client has to send its request line and headers")
    body_timeout_seconds: float = Field(10.0, description="time a client has to send its whole body once the "
                                        "headers are in (408 after)")
    keep_alive_seconds: float = Field(5.0, description="idle keep-alive connections are closed after this long")
    max_connections: int = Field(2048, description="open connections (and requests in progress) above which new "
                                 "ones are refused with 503")
    shutdown_grace_seconds: float = Field(10.0, description="after SIGTERM, the longest wait for requests in "
                                          "progress before they are cancelled")

    max_batch_requests: int = Field(64, description="most requests gathered into one inference run")
    max_batch_rows: int = Field(16384, description="most candidate rows (sum of C) gathered per batch")
    max_wait_us: int = Field(2000, description="longest a request waits for others to join its Redis fetch "
                             "while the inference worker is busy (never a wait when it is free)")
    max_fetches_in_flight: int = Field(4, gt=0, description="Redis batch fetches out at once, overlapping "
                                       "the inference of earlier batches")
    queue_size: int = Field(512, gt=0, description="score requests admitted and not yet answered; past it "
                            "new ones get 429 at the door")
    request_timeout_ms: float = Field(1000.0, gt=0, description="deadline of a /score request; a client may "
                                      "ask for less with the X-Request-Timeout-Ms header. A request that "
                                      "cannot be answered in time gets 429 at the door")
    max_queue_delay_ms: float = Field(250.0, gt=0, description="the door refuses a /score request (429) when "
                                      "the work ahead of it would take longer than this at the recent "
                                      "service rate (or longer than its own deadline)")
    breaker_failures: int = Field(3, gt=0, description="consecutive failed Redis fetches that open the circuit "
                                  "breaker (answers degraded at once, Redis probed in the background)")
    breaker_max_open_ms: float = Field(1000.0, gt=0, description="longest pause between two probes of an "
                                       "open breaker (the first is 100 ms, doubling)")

    precision: Literal["auto", "fp32", "int8"] = Field(
        "auto", description="graph to serve: auto = int8 on CPU where the artifact's checks passed, else fp32")
    require_gpu: bool = Field(False, description="fail start-up unless the CUDA provider is active")
    intra_op_threads: int = Field(0, description="ONNX Runtime intra-op threads (0 = its default)")
    inter_op_threads: int = Field(0, description="ONNX Runtime inter-op threads (0 = its default)")
    admin_token: SecretStr | None = Field(None, description="bearer token for POST /v2/models/reload and the "
                                          "paths in /v2/models (unset: open)")
    write_token: SecretStr | None = Field(None, description="bearer token for POST /events (unset: open)")
    allow_scenario_change: bool = Field(False, description="load a new version even if it drops scenarios "
                                        "the serving one has")
    access_log: bool = Field(False, description="log every request line (the metrics count requests anyway)")

    @model_validator(mode="after")
    def _cluster_needs_a_url(self):
        if self.redis_cluster and not self.redis_url:
            raise ValueError("SAINET_REDIS_CLUSTER=true needs SAINET_REDIS_URL (redis://any-node:port); "
                             "the embedded Redis is a single server")
        return self

    @field_validator("admin_token", "write_token", mode="before")
    @classmethod
    def _empty_token_is_unset(cls, value):
        # `SAINET_WRITE_TOKEN=` in an env file means "no token", never "the empty token"
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return value
