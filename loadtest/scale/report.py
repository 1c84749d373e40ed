"""scale.md and scale.png from scale.json's content (the JSON round trip: replica counts are "1", "2")."""

from __future__ import annotations

from pathlib import Path


def _cores(run: dict) -> str:
    used = run["cpu"]["cores_used"]
    nginx = sum(v for k, v in used.items() if k.startswith("nginx"))
    parts = [f"A {used.get('replica A', 0):.2f}", f"B {used.get('replica B', 0):.2f}", f"nginx {nginx:.2f}",
             f"loadgen {used.get('load generator', 0):.2f}", f"redis {used.get('redis', 0):.2f}",
             f"other {run['cpu']['other_cores']:.2f}"]
    return ", ".join(parts)


def _share(run: dict) -> str:
    counts = run.get("replica_requests", {})
    total = sum(counts.values())
    if not total:
        return ""
    return " / ".join(f"{counts[name] / total:.0%}" for name in sorted(counts))


def _statuses(s: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(s.get("status_counts", {}).items()))


def _row(label: str, s: dict) -> str:
    offered = "closed" if s["offered_rate"] is None else f"{s['offered_rate']:.0f}"
    return (f"| {label} | {offered} | {s['achieved_rate']:.0f} | {s['p50_ms']:.1f} | "
            f"{s['p99_ms']:.1f} | {s['failed']} | {_share(s)} | {_cores(s)} |")


def _quiet_warning(other: float, threshold: float = 0.25) -> list[str]:
    if other <= threshold:
        return [f"Machine quiet: at most {other:.2f} cores were busy outside the measured processes.", ""]
    return [f"**The machine was not quiet**: up to {other:.2f} cores were busy outside the measured processes "
            "(the *other* CPU figure: other programs, kernel network processing), so these figures are not clean; "
            "rerun with the machine otherwise idle.", ""]


def _served(layout: dict) -> str:
    served = layout.get("served") or {}
    return " ".join(str(served.get(k)) for k in ("name", "version", "precision", "provider") if served.get(k))


def _rate(sustainable: dict) -> str:
    return f"{sustainable['rate']:.0f}" + (" (none sustained)" if "note" in sustainable else "")


def _loadavg(values: list[float]) -> str:
    return " ".join(f"{x:.2f}" for x in values)


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = ["# Scaling out on loopback: replicas behind nginx, Redis Cluster", "",
             f"Machine: {m['cpu']} ({m['cpus']} CPUs), Python {m['python']}, onnxruntime {m['onnxruntime']}, "
             f"{m.get('nginx')}, {m.get('redis')}. Commit `{r['commit'][:10]}`, started {r['started_at'][:19]}Z, "
             f"{r['wall_seconds']:.0f} s. Load average before / after: "
             f"{_loadavg(r['loadavg_before'])} / {_loadavg(r['loadavg_after'])}.",
             "", f"Command: `{r['command']}`", "",
             f"Model: `{r['artifact']}` ({', '.join(r['model']['precision_files'])}).",
             ""]
    if "replicas" in r:
        lines += _replicas(r)
    if "cluster" in r:
        lines += _cluster(r)
    return "\n".join(lines) + "\n"


def _replicas(r: dict) -> list[str]:
    rep, c, cpus = r["replicas"], r["replicas_config"], r["cpus"]
    layout = rep["layout"]
    closed = rep["closed"]
    load = cpus["load_generator_nginx_redis"]
    load = "CPUs " + ",".join(map(str, load)) if isinstance(load, list) else "unpinned"
    lines = ["## Replicas behind nginx", "",
             f"Replica A on CPU {layout['replicas']['A']['cpu']}, replica B on CPU {layout['replicas']['B']['cpu']} "
             f"(taskset; `SAINET_INTRA_OP_THREADS=1`; serving {_served(layout)}); the load generator (sainet/bench/loadgen.py), nginx and Redis: "
             f"{load}.",
             ""]
    if not cpus["load_generator_apart"]:
        lines += ["**The load generator is not apart**: this machine has no core left after the replicas', so the "
                  "load generator, nginx and Redis share the replicas' two cores. With one replica they mostly run on "
                  "the idle core B (replica B is up but gets no traffic), with two they take CPU from both replicas: "
                  "the two-replica figures are biased low, the ratio understates what two dedicated cores give. "
                  "The *cores used* column shows how much each took.", ""]
    runs = [*closed["1"]["runs"], *closed["2"]["runs"], *rep["half_load"].values(), rep["two_at_one_half_load"],
            *[p for n in ("1", "2") for p in rep["sustainable"][n]["probes"]]]
    lines += _quiet_warning(max(run["cpu"]["other_cores"] for run in runs))
    lines += ["nginx: `deploy/nginx/nginx.conf` as shipped (least_conn, keep-alive to the upstreams, the same limits "
              "and timeouts, worker_processes auto), with only these lines substituted:", ""]
    for shipped, rendered in r["nginx_substitutions"]:
        lines.append(f"- `{shipped}` -> `{' '.join(rendered.split())}`")
    lines += ["", "One nginx instance per upstream set (A; A and B), both up for the whole part, so the closed-loop "
              "runs alternate 1, 2, 1, 2 with no restart. Workload: the bench's, "
              f"C = {c['candidates']} candidates, N = {c['history']} behaviours, {c['users']} seeded users; "
              f"closed loop {c['concurrency_per_replica']} connections per replica, {c['closed_seconds']:g} s x "
              f"{c['closed_repeats']}; "
              f"sustainable rate: open loop stepping down from the closed-loop median by 10% ({c['probe_seconds']:g} s "
              "probes) until >= 97% completed, <= 0.1% failed, p99 <= 500 ms (`sainet bench`'s rule); half load: "
              f"open loop at {c['half_fraction']:.0%} of each one's sustainable rate, {c['open_seconds']:g} s. "
              "Latencies are measured from each request's scheduled send time.", "",
              "| replicas | offered /s | achieved /s | p50 ms | p99 ms | failed | share A / B | cores used |",
              "|---|---|---|---|---|---|---|---|"]
    for n in ("1", "2"):
        for i, run in enumerate(closed[n]["runs"]):
            lines.append(_row(f"{n}, closed loop, {closed[n]['concurrency']} conn. (run {i + 1})", run))
    for n in ("1", "2"):
        lines.append(_row(f"{n}, open loop at {c['half_fraction']:.0%} of sustainable", rep["half_load"][n]))
    lines.append(_row(f"2, open loop at 1 replica's {c['half_fraction']:.0%} load", rep["two_at_one_half_load"]))
    s1, s2 = rep["sustainable"]["1"], rep["sustainable"]["2"]
    h1, h2 = rep["half_load"]["1"], rep["half_load"]["2"]
    lines += ["", "| figure | 1 replica | 2 replicas | 2 / 1 |", "|---|---|---|---|",
              f"| closed-loop throughput, median of runs (requests/s) | {closed['1']['median_rate']:.0f} | "
              f"{closed['2']['median_rate']:.0f} | **{closed['ratio']:.2f}** (runs: "
              f"{', '.join(f'{x:.2f}' for x in closed['pair_ratios'])}) |",
              f"| max sustainable open-loop rate (requests/s) | {_rate(s1)} | {_rate(s2)} | "
              f"**{rep['sustainable_ratio']:.2f}** |",
              f"| p99 at {c['half_fraction']:.0%} of sustainable (ms) | {h1['p99_ms']:.1f} at "
              f"{h1['offered_rate']:.0f}/s | {h2['p99_ms']:.1f} at {h2['offered_rate']:.0f}/s | "
              f"{h2['p99_ms'] / h1['p99_ms']:.2f} |",
              f"| p99 at {h1['offered_rate']:.0f}/s, 1 replica's {c['half_fraction']:.0%} load (ms) | "
              f"{h1['p99_ms']:.1f} | "
              f"{rep['two_at_one_half_load']['p99_ms']:.1f} | "
              f"{rep['two_at_one_half_load']['p99_ms'] / h1['p99_ms']:.2f} |", "",
              "Sustainable-rate search probes:", "",
              "| replicas | offered /s | achieved /s | p99 ms | failed | statuses | kept up |",
              "|---|---|---|---|---|---|---|"]
    from sainet.bench.runner import sustained

    for n in ("1", "2"):
        for p in rep["sustainable"][n]["probes"]:
            lines.append(f"| {n} | {p['offered_rate']:.0f} | {p['achieved_rate']:.0f} | {p['p99_ms']:.1f} | "
                         f"{p['failed']} | {_statuses(p)} | {'yes' if sustained(p) else 'no'} |")
    rss = ", ".join(f"{k} {v.get('peak_rss_mb', 0):.0f} MB" for k, v in layout["replicas"].items())
    lines += ["", f"Replica peak RSS: {rss}. *Cores used*: CPU seconds per second of each process group over the run "
              "(/proc), *other*: the rest of the machine's busy time (kernel network processing, anything else "
              "running). *Share*: /score requests answered by A and B (their /metrics).", ""]
    return lines


def _cluster(r: dict) -> list[str]:
    cl, c = r["cluster"], r["cluster_config"]
    lines = ["## Feature store batch fetch: Redis Cluster (3 masters) vs one Redis", "",
             f"A local cluster of three `redis-server --cluster-enabled yes` masters ({cl['created_with']}; users per "
             f"master: {', '.join(str(v) for v in cl['users_per_node'].values())}) and one plain redis-server, on "
             f"loopback, seeded with the same {c['users']} users (N = {c['history']} behaviours and a 2-field "
             "feature hash each) by `RedisBulkWriter` / `RedisClusterBulkWriter`. Timed: "
             "`RedisFeatureStore.fetch` vs `RedisClusterFeatureStore.fetch` (one pipeline per node, concurrently) "
             f"on the same random batch of B users, {c['repetitions']} times per B and store, interleaved (sizes "
             f"shuffled per repetition, the store that goes first alternating), after {c['warmup']} warm-up fetches "
             f"per B; a fetch timeout of {c['timeout_seconds']:g} s (the service's default is 0.05 s; a timeout "
             "would degrade users, which are counted). Wall time of the call in this process, decoding included.",
             "", "| B users | single median µs | single p99 µs | cluster median µs | cluster p99 µs | "
             "cluster / single median | cluster / single p99 | masters touched |", "|---|---|---|---|---|---|---|---|"]
    for p in cl["points"]:
        s, k = p["single"], p["cluster"]
        lines.append(f"| {p['batch']} | {s['median_us']:.0f} | {s['p99_us']:.0f} | {k['median_us']:.0f} | "
                     f"{k['p99_us']:.0f} | **{p['ratio_median']:.2f}** | {p['ratio_p99']:.2f} | "
                     f"{p['mean_nodes_touched']:.2f} |")
    if "cpu" in cl:
        used = cl["cpu"]["cores_used"]
        lines += ["", "Cores used over the timed fetches: " + ", ".join(f"{k} {v:.2f}" for k, v in used.items())
                  + f", other {cl['cpu']['other_cores']:.2f}."]
        lines += [""] + _quiet_warning(cl["cpu"]["other_cores"])[:-1]
    lines += ["", f"Degraded users during the timed fetches: single {cl['degraded_users']['single']}, cluster "
              f"{cl['degraded_users']['cluster']}. On loopback a round trip costs tens of microseconds, so these "
              "times are mostly client CPU: decoding the histories (the same in both) and, for the cluster, grouping "
              "the keys by slot and one pipeline and asyncio task per master. Network latency between hosts is not "
              "part of this measurement.", ""]
    return lines


def plot(r: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in ("replicas", "cluster") if k in r]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "replicas":
            rep = r["replicas"]
            for n, color in (("1", "tab:blue"), ("2", "tab:orange")):
                points = sorted(rep["sustainable"][n]["probes"] + [rep["half_load"][n]],
                                key=lambda p: p["offered_rate"])
                ax.plot([p["offered_rate"] for p in points], [p["p99_ms"] for p in points], marker="o", color=color,
                        label=f"{n} replica{'s' if n == '2' else ''}: p99, open loop")
                ax.axvline(rep["closed"][n]["median_rate"], color=color, linestyle="--",
                           label=f"{n}: closed-loop max")
                ax.axvline(rep["sustainable"][n]["rate"], color=color, linestyle=":", label=f"{n}: max sustainable")
            ax.set(xlabel="offered load (requests/s)", ylabel="p99 latency (ms)", yscale="log",
                   title="/score through nginx (deploy/nginx/nginx.conf)")
        else:
            points = r["cluster"]["points"]
            xs = [p["batch"] for p in points]
            for kind, color in (("single", "tab:green"), ("cluster", "tab:red")):
                ax.plot(xs, [p[kind]["median_us"] / 1e3 for p in points], marker="o", color=color,
                        label=f"{kind}: median")
                ax.plot(xs, [p[kind]["p99_us"] / 1e3 for p in points], marker="x", linestyle="--", color=color,
                        label=f"{kind}: p99")
            ax.set(xlabel="users per fetch (B)", ylabel="fetch time (ms)", xscale="log", yscale="log",
                   title=f"feature store fetch, N = {r['cluster_config']['history']}")
            ax.set_xticks(xs, [str(x) for x in xs])
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
