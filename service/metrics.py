"""Prometheus metrics of the service (one registry per app, so tests can run several apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_latency = Histogram(
            "sainet_request_duration_seconds", "HTTP request latency", ["endpoint", "scenario", "status"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.stage_latency = Histogram(
            "sainet_stage_duration_seconds", "latency of a scoring stage (redis_fetch, queue_wait, inference)",
            ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_requests = Histogram("sainet_batch_requests", "requests per inference run",
                                        buckets=SIZE_BUCKETS, registry=r)
        self.batch_rows = Histogram("sainet_batch_candidate_rows", "candidate rows per inference run",
                                    buckets=SIZE_BUCKETS, registry=r)
        self.queue_depth = Gauge("sainet_queue_depth", "score requests waiting for a batch", registry=r)
        self.rejected = Counter("sainet_rejected_total", "score requests refused or dropped before inference "
                                "(queue_full, deadline_estimate: at the door; deadline: in the queue; "
                                "breaker_open: fetches skipped, scored as cold start)", ["reason"], registry=r)
        self.rejection_latency = Histogram(
            "sainet_rejection_duration_seconds", "time from a request's arrival to its refusal at the door",
            buckets=(0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05), registry=r)
        self.refused_before_handler = Counter(
            "sainet_refused_before_handler_total", "requests answered before any route ran (431 and 408 by "
            "the HTTP server, 413 and 408 on the body, 503 at the connection cap)", ["status"], registry=r)
        self.loop_lag = Gauge("sainet_event_loop_lag_seconds", "how late the event loop's timers fire (a "
                              "moving average): what a request waits before the door sees it", registry=r)
        self.fetches_in_flight = Gauge("sainet_fetches_in_flight", "Redis batch fetches out now", registry=r)
        self.breaker_open = Gauge("sainet_feature_store_breaker_open", "1 while the feature store's circuit "
                                  "breaker is open (fetches skipped, answers degraded)", registry=r)
        self.breaker_transitions = Counter("sainet_feature_store_breaker_transitions_total",
                                           "times the breaker opened or closed", ["to"], registry=r)
        ProcessCollector(registry=r)    # process_cpu_seconds_total, process_resident_memory_bytes, open fds
        self.degraded = Counter("sainet_degraded_total", "requests scored without Redis (cold start)", registry=r)
        self.cold_start = Counter("sainet_cold_start_total", "requests scored with an empty history", registry=r)
        self.events = Counter("sainet_events_appended_total", "behaviours appended through /events", registry=r)
        self.undecodable_entries = Counter(
            "sainet_undecodable_entries_total", "stored history or feature entries that could not be decoded "
            "and were skipped (never a Redis fault)", registry=r)
        self.feature_store_up = Gauge("sainet_feature_store_up", "1 when the feature store answered the last "
                                      "readiness probe's ping, else 0 (answers are degraded)", registry=r)
        self.batcher_restarts = Counter("sainet_batcher_restarts_total", "times the batching loop died and was "
                                        "restarted", registry=r)
        self.reloads = Counter("sainet_model_reloads_total", "model load attempts", ["outcome"], registry=r)
        self.model_info = Gauge("sainet_model_info", "the model being served (value 1)",
                                ["name", "version", "provider", "precision"], registry=r)

    def set_model(self, name: str, version: str, provider: str, precision: str) -> None:
        self.model_info.clear()
        self.model_info.labels(name=name, version=version, provider=provider, precision=precision).set(1)


METRIC_NAMES = (
    "sainet_request_duration_seconds", "sainet_stage_duration_seconds", "sainet_batch_requests",
    "sainet_batch_candidate_rows", "sainet_queue_depth", "sainet_rejected_total", "sainet_degraded_total",
    "sainet_cold_start_total", "sainet_events_appended_total", "sainet_model_reloads_total", "sainet_model_info",
    "sainet_undecodable_entries_total", "sainet_batcher_restarts_total", "sainet_feature_store_up",
    "sainet_rejection_duration_seconds", "sainet_refused_before_handler_total", "sainet_fetches_in_flight",
    "sainet_event_loop_lag_seconds",
    "sainet_feature_store_breaker_open", "sainet_feature_store_breaker_transitions_total",
)
