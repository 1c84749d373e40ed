"""Load test of the scoring service.

Users are drawn from the seeded users with a Zipf-like popularity, scenarios from a mix, candidate
counts uniformly from a range (default 50-500), and a share of the traffic (default 5%) posts
/events. At the end an SLO gate (p99 latency, failure ratio) sets a non-zero exit code on breach.

Headless run writing CSV and HTML reports (see the README):

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 --headless -u 64 -r 16 -t 60s \\
        --csv loadtest/out/run --csv-full-history --html loadtest/out/run.html
"""

from __future__ import annotations

import json
import logging
import os
import random
import time

import numpy as np
from locust import FastHttpUser, between, events, task

log = logging.getLogger(__name__)


@events.init_command_line_parser.add_listener
def _add_arguments(parser):
    group = parser.add_argument_group("sainet workload")
    group.add_argument("--workload", default="", help="JSON file with lists 'users', 'items', 'scenarios'")
    group.add_argument("--num-users", type=int, default=4000, help="seeded users u0..u{n-1} (synthetic)")
    group.add_argument("--num-items", type=int, default=500, help="items i0..i{n-1} (synthetic)")
    group.add_argument("--scenario-mix", default="s0:0.5,s1:0.3,s2:0.2", help="scenario:weight,...")
    group.add_argument("--zipf", type=float, default=1.1, help="exponent of user popularity")
    group.add_argument("--min-candidates", type=int, default=50)
    group.add_argument("--max-candidates", type=int, default=500)
    group.add_argument("--events-share", type=float, default=0.05, help="share of requests posting /events")
    group.add_argument("--slo-p99-ms", type=float, default=200.0, help="p99 latency SLO of /score")
    group.add_argument("--slo-failure-ratio", type=float, default=0.01, help="allowed failure ratio")
    group.add_argument("--write-token", default=os.environ.get("SAINET_WRITE_TOKEN", ""),
                       help="bearer token for /events (default: $SAINET_WRITE_TOKEN)")


class Workload:
    def __init__(self, options):
        if options.workload:
            with open(options.workload) as f:
                spec = json.load(f)
            self.users, self.items = list(spec["users"]), list(spec["items"])
            scenarios = spec["scenarios"]
            self.scenarios = list(scenarios)  # a list, or {scenario: weight}
            weights = [scenarios[s] for s in self.scenarios] if isinstance(scenarios, dict) else None
        else:
            self.users = [f"u{i}" for i in range(options.num_users)]
            self.items = [f"i{i}" for i in range(options.num_items)]
            pairs = [p.split(":") for p in options.scenario_mix.split(",")]
            self.scenarios = [s for s, _ in pairs]
            weights = [float(w) for _, w in pairs]
        self.scenario_weights = np.asarray(weights or [1.0] * len(self.scenarios), dtype=float)
        self.scenario_weights /= self.scenario_weights.sum()
        ranks = np.arange(1, len(self.users) + 1, dtype=float)
        popularity = ranks ** -options.zipf
        self.user_cdf = np.cumsum(popularity / popularity.sum())
        self.min_c = max(1, options.min_candidates)
        self.max_c = max(self.min_c, min(options.max_candidates, len(self.items)))

    def user(self, rng: random.Random) -> str:
        return self.users[min(int(np.searchsorted(self.user_cdf, rng.random())), len(self.users) - 1)]

    def scenario(self, rng: random.Random) -> str:
        return self.scenarios[int(np.searchsorted(np.cumsum(self.scenario_weights), rng.random()))]

    def candidates(self, rng: random.Random) -> list[str]:
        return rng.sample(self.items, rng.randint(self.min_c, self.max_c))


WORKLOAD: Workload | None = None


@events.test_start.add_listener
def _build_workload(environment, **_):
    global WORKLOAD
    WORKLOAD = Workload(environment.parsed_options)


class ScoringUser(FastHttpUser):
    wait_time = between(0.0, 0.01)

    def on_start(self):
        self.rng = random.Random()
        self.events_share = self.environment.parsed_options.events_share
        token = self.environment.parsed_options.write_token
        self.write_headers = {"Authorization": f"Bearer {token}"} if token else {}

    @task
    def request(self):
        w = WORKLOAD
        user, scenario = w.user(self.rng), w.scenario(self.rng)
        if self.rng.random() < self.events_share:
            self.client.post("/events", json={"user_id": user, "item_id": self.rng.choice(w.items),
                                              "scenario": scenario, "timestamp": time.time()}, name="/events",
                             headers=self.write_headers)
            return
        with self.client.post("/score", json={"user_id": user, "scenario": scenario,
                                              "candidates": w.candidates(self.rng)},
                              name="/score", catch_response=True) as response:
            if response.status_code == 200 and "scores" not in (response.json() or {}):
                response.failure("no scores in the answer")


@events.quitting.add_listener
def _slo_gate(environment, **_):
    """Non-zero exit code when the /score p99 or the failure ratio breaks its SLO."""
    options = environment.parsed_options
    stats = environment.stats
    score = stats.get("/score", "POST")
    p99 = score.get_response_time_percentile(0.99) if score.num_requests else 0.0
    failure_ratio = stats.total.fail_ratio
    breaches = []
    if p99 > options.slo_p99_ms:
        breaches.append(f"/score p99 {p99:.1f} ms > {options.slo_p99_ms} ms")
    if failure_ratio > options.slo_failure_ratio:
        breaches.append(f"failure ratio {failure_ratio:.4f} > {options.slo_failure_ratio}")
    if breaches:
        log.error("SLO breached: %s", "; ".join(breaches))
        environment.process_exit_code = 1
    else:
        log.info("SLO met: /score p99 %.1f ms, failure ratio %.4f", p99, failure_ratio)
