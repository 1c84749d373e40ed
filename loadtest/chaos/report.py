"""`report.json`, `report.md` and the plots of a chaos run: every figure of issue 13 for each
version of the service, side by side, with the ratio current / baseline."""

from __future__ import annotations

import json
from pathlib import Path


def _get(d, *path):
    for key in path:
        if d is None:
            return None
        if isinstance(key, int):
            d = d[key] if isinstance(d, list) and len(d) > key else None
        else:
            d = d.get(key) if isinstance(d, dict) else None
    return d


def _delay_phase(t: dict, delay_ms: float) -> dict | None:
    for phase in _get(t, "delays", "phases") or []:
        if phase["delay_ms"] == delay_ms:
            return phase
    return None


def figures(t: dict, deadline_ms: float, delays_ms: tuple[float, ...]) -> list[tuple[str, object, str, object]]:
    """(figure, value, comparison, target) rows; target None = reported, no target."""
    rows = [
        ("closed-loop throughput, requests/s", _get(t, "closed", "achieved_rate"), "", None),
        ("in-process compute limit, requests/s", _get(t, "closed", "compute_limit_rps"), "", None),
        ("closed loop / compute limit", _get(t, "closed", "ratio_to_compute_limit"), ">=", 0.7),
        ("max sustainable open-loop rate, requests/s", _get(t, "overload", "sustainable", "rate"), "", None),
        ("overload: offered, requests/s", _get(t, "overload", "overload", "offered_rate"), "", None),
        ("overload: goodput (200s/s)", _get(t, "overload", "overload", "achieved_rate"), "", None),
        ("overload: goodput / sustainable", _get(t, "overload", "overload", "goodput_ratio_to_sustainable"), ">=", 0.9),
        ("overload: goodput within the deadline / sustainable",
         _get(t, "overload", "overload", "goodput_within_deadline_ratio"), "", None),
        ("overload: p99 of 200s, ms", _get(t, "overload", "overload", "p99_ms"), "<=", deadline_ms),
        ("overload: rejections (429/503) at the client, p50 ms", _get(t, "overload", "overload", "rejection_p50_ms"),
         "", None),
        ("overload: rejections (429/503) at the client, p99 ms", _get(t, "overload", "overload", "rejection_p99_ms"),
         "<", 20.0),
        ("overload: most 503s within 50 ms (burst expiries)",
         _get(t, "overload", "overload", "largest_503_burst_in_50ms"), "", None),
        ("overload: load generator's own send lag, p99 ms (client-bound if large)",
         _get(t, "overload", "overload", "client_send_lag_ms", "p99"), "", None),
    ]
    for delay in delays_ms:
        phase = _delay_phase(t, delay)
        rows += [
            (f"Redis +{delay:g} ms: throughput / no delay", _get(phase, "throughput_ratio_to_no_delay"), ">=", 0.8),
            (f"Redis +{delay:g} ms: degraded share of 200s", _get(phase, "degraded_share"), "", None),
            (f"Redis +{delay:g} ms: readiness polls answered 200", _get(phase, "readiness", "fraction_200"), ">=", 1.0),
            (f"Redis +{delay:g} ms: /events answered 200, share",
             _share_200(_get(phase, "events", "status_counts")), "", None),
        ]
    rows += [
        ("Redis killed: 5xx answers", _get(t, "kill", "server_errors_5xx"), "<=", 0),
        ("Redis killed: client errors", _get(t, "kill", "client_errors"), "", None),
        ("Redis killed: degraded share of 200s while down", _get(t, "kill", "during", "degraded_share"), "", None),
        ("Redis killed: first non-degraded answer after Redis answers, s", _recovery(t), "<=", 2.0),
        ("Redis killed: last degraded answer after Redis answers, s",
         _get(t, "kill", "last_degraded_after_redis_back_s"), "", None),
        ("Redis killed: readiness polls answered 200 while down",
         _get(t, "kill", "readiness_while_down", "fraction_200"), "", None),
        ("/events flood: degraded /score answers", _get(t, "flood", "score", "degraded"), "<=", 0),
        ("/events flood: /score 200s/s", _get(t, "flood", "score", "achieved_rate"), "", None),
        ("/events flood: /events answered 200, share", _share_200(_get(t, "flood", "events", "status_counts")),
         "", None),
        ("events under load: event_id", t.get("event_id_support"), "", None),
        ("events under load: users checked", _get(t, "events", "check", "checked"), "", None),
        ("events under load: users whose list is not their latest N in order",
         _get(t, "events", "check", "mismatched"), "<=", 0),
        ("events under load: users with duplicates", _get(t, "events", "check", "duplicates"), "<=", 0),
        ("events under load: retries (429/503/timeouts)", _get(t, "events", "retries"), "", None),
        ("events under load: deliberate duplicate deliveries", _get(t, "events", "deliberate_duplicates"), "", None),
    ]
    return rows


def _recovery(t: dict):
    kill = t.get("kill")
    if not kill:
        return None
    value = kill.get("first_non_degraded_after_redis_back_s")
    if value is None:
        return f"none in {kill['after']['seconds']:.1f} s"
    return value


def _share_200(counts: dict | None) -> float | None:
    if not counts:
        return None
    total = sum(counts.values())
    return counts.get("200", 0) / total if total else None


def met(value, comparison: str, target) -> str:
    if isinstance(value, str) and value.startswith("none in") and target is not None:
        return " ✗"
    if target is None or value is None or isinstance(value, str):
        return ""
    ok = {"<=": value <= target, ">=": value >= target, "<": value < target}[comparison]
    return " ✓" if ok else " ✗"


def fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    return str(value)


def ratio(a, b) -> str:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and b:
        return f"{a / b:.2f}"
    return ""


def _status(counts: dict | None) -> str:
    if not counts:
        return "–"
    return ", ".join(f"{k}: {v:,}" for k, v in sorted(counts.items()))


def markdown(r: dict) -> str:
    c = r["config"]
    deadline = r["deadline_ms"]
    delays = tuple(c["delays_ms"])
    labels = list(r["targets"])
    targets = [r["targets"][label] for label in labels]
    lines = ["# Chaos and overload run (issue 13)", ""]
    lines.append(f"{r['started_at']} · {r['machine']['cpu']} · {r['machine']['cpus']} CPUs · load average at start "
                 f"{', '.join(f'{x:.2f}' for x in r['machine']['load_average'])} · service on CPU "
                 f"{r['cpus']['service']}, load generator + proxy + Redis on CPU "
                 f"{r['cpus']['load_generator_proxy_redis']} · model `{r['artifact']}` · C = {c['candidates']}, "
                 f"{c['users']:,} users, deadline {deadline:g} ms · phases {c['phase_seconds']:g} s · "
                 f"wall {r.get('wall_seconds', 0):.0f} s")
    lines.append("")
    for t in targets:
        lines.append(f"- **{t['label']}**: `{t['commit']}` ({t['code_dir']}); settings not passed (this version "
                     f"lacks them): {', '.join(t['settings_not_supported']) or 'none'}; /events body: "
                     f"{t.get('events_body_format')}; event_id: {t.get('event_id_support')}; code imported from "
                     f"`{t.get('imports_from')}`; seconds to settle before each scenario (a /score answered 200, "
                     f"not degraded): {', '.join(f'{k} {fmt(v)}' for k, v in (t.get('settle_seconds') or {}).items())}"
                     + (f"; **errors**: {t['errors']}" if t.get("errors") else ""))
    lines += ["", "## Figures", ""]
    head = "| figure | target | " + " | ".join(labels) + (" | " + " / ".join(labels) if len(labels) == 2 else "") + " |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    rows = [figures(t, deadline, delays) for t in targets]
    for i, (name, _, comparison, target) in enumerate(rows[0]):
        values = [row[i][1] for row in rows]
        cells = [fmt(v) + met(v, comparison, target) for v in values]
        tgt = f"{comparison} {fmt(target)}" if target is not None else ""
        line = f"| {name} | {tgt} | " + " | ".join(cells)
        if len(labels) == 2:
            line += " | " + ratio(values[0], values[1])
        lines.append(line + " |")
    lines += ["", "✓/✗: the issue's target met or not. Ratios: current / baseline.", ""]

    for t in targets:
        lines += [f"## {t['label']}: details", ""]
        closed = t.get("closed") or {}
        lines.append(f"**Closed loop** ({c['connections']} connections): {fmt(closed.get('achieved_rate'))} requests/s, "
                     f"p50 {fmt(closed.get('p50_ms'))} ms, p99 {fmt(closed.get('p99_ms'))} ms, degraded "
                     f"{fmt(closed.get('degraded'))}; statuses {_status(closed.get('status_counts'))}; sent in the phase but "
                     f"answered after it: {fmt(closed.get('answered_after_phase_end'))}.")
        lines.append("")
        overload = t.get("overload") or {}
        probes = _get(overload, "sustainable", "probes") or []
        if probes:
            lines.append("**Sustainable-rate probes** (open loop): " + "; ".join(
                f"{fmt(p['offered_rate'])}/s → {fmt(p['achieved_rate'])}/s, p99 {fmt(p['p99_ms'])} ms" for p in probes)
                + (f" ({overload['sustainable']['note']})" if overload["sustainable"].get("note") else ""))
            lines.append("")
        o = overload.get("overload") or {}
        if o:
            lines.append(f"**{c['overload_factor']:g}x overload**: offered {fmt(o['offered_rate'])}/s, "
                         f"{fmt(o['sent'])} requests; 200s {fmt(o['achieved_rate'])}/s (within the deadline "
                         f"{fmt(o['goodput_within_deadline'])}/s), p50 {fmt(o['p50_ms'])} ms, p99 {fmt(o['p99_ms'])} ms; "
                         f"rejections p50 {fmt(o['rejection_p50_ms'])} ms, p99 {fmt(o['rejection_p99_ms'])} ms; "
                         f"statuses {_status(o['status_counts'])}; connections opened "
                         f"{fmt(o.get('connections_opened'))}; the load generator's own send lag (scheduled to "
                         f"sent) p99 {fmt(_get(o, 'client_send_lag_ms', 'p99'))} ms, max "
                         f"{fmt(_get(o, 'client_send_lag_ms', 'max'))} ms. Timeline: `overload_timeline.png`.")
            lines.append("")
        phases = _get(t, "delays", "phases") or []
        if phases:
            lines += ["**Redis delay** (closed loop, readiness every "
                      f"{c['ready_interval_seconds'] * 1000:g} ms, one /events sender):", "",
                      "| delay | 200s/s | ratio | p50 ms | p99 ms | degraded share | ready 200 | /score statuses | "
                      "/events statuses |", "|---|---|---|---|---|---|---|---|---|"]
            for p in phases:
                lines.append(f"| +{p['delay_ms']:g} ms | {fmt(p['achieved_rate'])} | "
                             f"{fmt(p['throughput_ratio_to_no_delay'])} | {fmt(p['p50_ms'])} | {fmt(p['p99_ms'])} | "
                             f"{fmt(p['degraded_share'])} | {fmt(_get(p, 'readiness', 'fraction_200'))} | "
                             f"{_status(p['status_counts'])} | {_status(_get(p, 'events', 'status_counts'))} |")
            lines.append("")
        k = t.get("kill") or {}
        if k:
            lines.append(f"**Redis killed** for {fmt(k['refused_seconds'])} s (at {fmt(k['killed_at_s'])} s; answering "
                         f"again at {fmt(k['redis_answering_at_s'])} s) under {fmt(k['rate'])} requests/s: "
                         f"statuses {_status(k['status_counts'])}; before: degraded share "
                         f"{fmt(k['before']['degraded_share'])}; while down: {_status(k['during']['status_counts'])}, "
                         f"degraded share {fmt(k['during']['degraded_share'])}, p99 {fmt(k['during']['p99_ms'])} ms; "
                         f"after: {_status(k['after']['status_counts'])}, degraded share "
                         f"{fmt(k['after']['degraded_share'])}; readiness while down "
                         f"{_status(_get(k, 'readiness_while_down', 'status_counts'))}. Timeline: `kill_timeline.png`.")
            lines.append("")
        f = t.get("flood") or {}
        if f.get("score"):
            lines.append(f"**/events flood** ({f['senders']} senders, {c['flood_events_per_request']} events each, "
                         f"beside {f['score_connections']} /score connections): /score {_status(f['score']['status_counts'])}"
                         f", degraded {f['score']['degraded']}, p50 {fmt(f['score']['p50_ms'])} ms, p99 "
                         f"{fmt(f['score']['p99_ms'])} ms (every request sent in the phase, whenever answered); /events "
                         f"{fmt(f['events']['requests_per_s'])} requests/s, {_status(f['events']['status_counts'])}, "
                         f"p99 {fmt(f['events']['p99_ms'])} ms.")
            lines.append("")
        e = t.get("events") or {}
        if e.get("check"):
            ch = e["check"]
            lines.append(f"**Events under load**: {e['events']:,} events of {e['users']:,} users from {e['senders']} "
                         f"ordered senders in {fmt(e['seconds'])} s ({e['requests']:,} requests, {e['sends']:,} sends: "
                         f"{e['retries']:,} retries, {e['deliberate_duplicates']:,} deliberate duplicates, "
                         f"{e['given_up']} given up, {e['rejected_permanently']} refused), event_id "
                         f"{'sent' if e['event_ids'] else 'not sent'} ({e['event_id_support']}); {e['stalls']} Redis "
                         f"stalls of +{e['stall_ms']:g} ms; /events statuses {_status(e['status_counts'])}; beside "
                         f"/score {_status(e['score']['status_counts'])}. Check of every user's list (latest "
                         f"{ch['history_length']}, newest first): {ch['exact']:,} exact, {ch['duplicates']:,} with "
                         f"duplicates, {ch['missing_or_extra']:,} missing/extra, {ch['out_of_order']:,} out of order, "
                         f"{ch['unconfirmed']:,} not checked (a request never confirmed)."
                         + (" Examples: " + "; ".join(
                             f"{x['user']}: {x['kind']}, {x['stored_len']} stored, {x['duplicate_timestamps']} "
                             "duplicated" for x in ch["examples"][:3]) + "." if ch["examples"] else ""))
            lines.append("")
        if t.get("errors"):
            lines += [f"**Errors**: {t['errors']}", ""]
    lines += ["## How it was measured", "",
              "`python -m loadtest.chaos` (loadtest/chaos/): its own redis-server behind a delaying TCP proxy "
              "(asyncio, its own process; delays Redis's replies, refuses connections while Redis is down), "
              "the service as `python -m sainet serve` with SAINET_* settings, an asyncio load generator that keeps "
              "every request's status and `degraded` flag. Open-loop latencies run from each request's scheduled "
              "time. \"Redis killed\": SAVE, SIGKILL, the proxy's port refusing connections, then redis-server "
              "started again on its port, loading that snapshot. Events: each user's events come from one sender in "
              "timestamp order; a request answered 429/503 or timed out at the client "
              f"({c['events_timeout_seconds']:g} s) is sent again with the same body and event_ids; "
              f"{c['duplicate_share'] * 100:g}% of confirmed requests are sent once more on purpose; Redis stalls "
              f"(+{c['stall_ms']:g} ms for {c['stall_for_seconds']:g} s every {c['stall_every_seconds']:g} s) make "
              "writes time out.", ""]
    return "\n".join(lines)


def plot(r: dict, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    labels = list(r["targets"])
    deadline = r["deadline_ms"]

    def panels(name: str, key: str, title: str, marks=None):
        tls = [(label, _get(r["targets"][label], *key.split("."))) for label in labels]
        tls = [(label, tl) for label, tl in tls if tl]
        if not tls:
            return
        fig, axes = plt.subplots(2, len(tls), figsize=(6 * len(tls), 6), squeeze=False, sharex="col")
        for col, (label, tl) in enumerate(tls):
            ax, lat = axes[0][col], axes[1][col]
            width = tl["bin_seconds"]
            bottom = [0] * len(tl["t"])
            for kind, colour in (("ok", "tab:green"), ("degraded", "tab:orange"), ("429", "tab:blue"),
                                 ("503", "tab:red"), ("other_5xx", "darkred"), ("client_error", "grey")):
                values = [v / width for v in tl[kind]]
                if any(values):
                    ax.bar(tl["t"], values, width=width, bottom=bottom, align="edge", color=colour, label=kind)
                    bottom = [b + v for b, v in zip(bottom, values)]
            ax.set(title=f"{label}: {title}", ylabel="answers/s")
            ax.legend(fontsize=7, loc="upper right")
            xs = [t + width / 2 for t, v in zip(tl["t"], tl["p99_ms_of_200"]) if v is not None]
            ys = [v for v in tl["p99_ms_of_200"] if v is not None]
            lat.plot(xs, ys, marker=".", label="p99 of 200s")
            lat.axhline(deadline, color="red", linestyle="--", label="deadline")
            lat.set(xlabel="s (finishing time, from the measured start)", ylabel="ms", yscale="log")
            lat.legend(fontsize=7)
            for mark in (marks(label) if marks else []):
                for a in (ax, lat):
                    a.axvline(mark, color="black", linestyle=":")
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path.name)

    panels("overload_timeline.png", "overload.overload.timeline", f"{r['config']['overload_factor']:g}x overload")
    panels("kill_timeline.png", "kill.timeline", "Redis killed (dotted: killed, answering again)",
           marks=lambda label: [x for x in (_get(r["targets"][label], "kill", "killed_at_s"),
                                            _get(r["targets"][label], "kill", "redis_answering_at_s")) if x is not None])

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for label in labels:
        phases = _get(r["targets"][label], "delays", "phases") or []
        if phases:
            axes[0].plot([p["delay_ms"] for p in phases], [p["throughput_ratio_to_no_delay"] for p in phases],
                         marker="o", label=label)
            axes[1].plot([p["delay_ms"] for p in phases], [p["degraded_share"] for p in phases], marker="o", label=label)
    axes[0].axhline(0.8, color="grey", linestyle="--", label="target 0.8")
    axes[0].set(xlabel="Redis delay, ms", ylabel="throughput / no delay", title="closed loop under Redis delay")
    axes[1].set(xlabel="Redis delay, ms", ylabel="degraded share of 200s", title="degraded answers")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "redis_delay.png", dpi=90)
    plt.close(fig)
    written.append("redis_delay.png")
    return written


def write_report(results: dict, out_dir: Path) -> None:
    out_dir = Path(out_dir)
    (out_dir / "report.json").write_text(json.dumps(results, indent=2, default=str))
    try:
        results["plots"] = plot(results, out_dir)
    except Exception as error:     # the figures matter more than the pictures
        results["plots_error"] = repr(error)
    (out_dir / "report.md").write_text(markdown(results))
    (out_dir / "report.json").write_text(json.dumps(results, indent=2, default=str))
