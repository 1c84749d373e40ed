"""The synthetic sweep in one table and one plot (issue 14 item 3): per divergence, SAINet against the
best baseline and against its history ablations (`sainet-no-sie`, `sainet-no-stm`), beside the
world's references, from the `sainet study` reports of `<sweep>/d=<divergence>/`.

    .venv/bin/python scripts/sweep_report.py [SWEEP_DIR]      default: docs/results/synthetic-sweep

Writes SWEEP_DIR/README.md and SWEEP_DIR/sweep.png; trains nothing. Overall test AUC; differences
with Welch's 95% interval over seeds (as each study's own report); a study still running is marked
partial and its figures are those of the cells finished so far.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from model.study import MAIN_MODEL, difference_interval, interval_outcome, seed_aucs, welch

ABLATIONS = ("sainet-no-sie", "sainet-no-stm")
REFERENCES = {"popularity": "item popularity", "attainable": "attainable", "oracle": "oracle"}


def divergence_of(folder: Path) -> float:
    return float(folder.name.removeprefix("d="))


def reference(study: dict, prefix: str) -> float | None:
    """The overall AUC of the reference whose name starts with `prefix`."""
    for name, aucs in (study.get("references") or {}).items():
        if name.startswith(prefix):
            return aucs.get("overall")
    return None


def comparison(main: pd.DataFrame, rival: str) -> dict:
    """SAINet - rival over the seeds, overall: difference, 95% interval, Welch p and the outcome."""
    ours, theirs = seed_aucs(main, MAIN_MODEL, "overall"), seed_aucs(main, rival, "overall")
    if not len(ours) or not len(theirs):
        return {"rival": rival, "difference": None, "ci95": None, "p": None, "outcome": "pending"}
    interval = difference_interval(ours, theirs)
    return {"rival": rival, "difference": float(ours.mean() - theirs.mean()), "ci95": interval,
            "p": welch(ours, theirs)[1], "outcome": interval_outcome(interval)}


def sweep_rows(sweep: Path) -> list[dict]:
    rows = []
    for folder in sorted(sweep.glob("d=*"), key=divergence_of):
        if not (folder / "study.json").exists():
            continue
        study = json.loads((folder / "study.json").read_text())
        frame = pd.read_csv(folder / "results.csv")
        main = frame[frame.variant == "main"]
        baselines = [m for m in main.model.unique() if m != MAIN_MODEL and m not in ABLATIONS]
        means = {m: seed_aucs(main, m, "overall").mean() for m in baselines}
        best = max(means, key=means.get) if means else None
        sainet = seed_aucs(main, MAIN_MODEL, "overall")
        per_scenario = {s: t["outcome"] for s, t in study.get("t_tests", {}).items() if s != "overall"}
        rows.append({
            "divergence": divergence_of(folder), "folder": folder.name, "cells": study["cells"],
            "cells_planned": study.get("cells_planned"), "cpu_seconds": study["cell_cpu_seconds_total"],
            "sainet_mean": float(sainet.mean()) if len(sainet) else None, "sainet_seeds": len(sainet),
            "best_baseline": best, "best_baseline_mean": means.get(best),
            "against_best": comparison(main, best) if best else None,
            "ablations": {a: comparison(main, a) for a in ABLATIONS},
            "per_scenario": per_scenario,
            "references": {key: reference(study, prefix) for key, prefix in REFERENCES.items()}})
    return rows


def difference_text(c: dict | None) -> str:
    if not c or c["difference"] is None:
        return "pending"
    interval = "" if c["ci95"] is None else f" [{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]"
    p = "" if c["p"] is None else f", p {c['p']:.2g}"
    return f"{c['difference']:+.4f}{interval}{p}"


def number(value: float | None) -> str:
    return "…" if value is None else f"{value:.4f}"


def markdown(rows: list[dict]) -> str:
    lines = ["# The synthetic sweep: do the scenario tags pay as they grow informative?", "",
             "Each row is one `sainet study` at one divergence of the synthetic world (`../synthetic-world.md`; "
             "0: every scenario shares the user's taste, 1: unrelated tastes per scenario), in `d=<divergence>/`. "
             "Overall test AUC, mean over seeds; differences are SAINet minus the model named, with Welch's 95% "
             "interval and p. Rebuilt by `python scripts/sweep_report.py`.", "",
             "| divergence | cells | SAINet | best baseline | SAINet - best baseline | per scenario | "
             "SAINet - no-SIE | SAINet - no-STM | attainable | popularity | oracle | CPU h |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        partial = r["cells_planned"] and r["cells"] < r["cells_planned"]
        cells = f"{r['cells']} of {r['cells_planned']} (partial)" if partial else str(r["cells"])
        outcomes = sorted(set(r["per_scenario"].values()))
        scenarios = (outcomes[0] + " in every scenario" if len(outcomes) == 1
                     else ", ".join(f"{s}: {o}" for s, o in r["per_scenario"].items())) if outcomes else ""
        best = f"{r['best_baseline']} {number(r['best_baseline_mean'])}" if r["best_baseline"] else "…"
        lines.append(
            f"| {r['divergence']:g} | {cells} | {number(r['sainet_mean'])} | {best} | "
            f"{difference_text(r['against_best'])} ({(r['against_best'] or {}).get('outcome', 'pending')}) | "
            f"{scenarios} | {difference_text(r['ablations']['sainet-no-sie'])} | "
            f"{difference_text(r['ablations']['sainet-no-stm'])} | {number(r['references']['attainable'])} | "
            f"{number(r['references']['popularity'])} | {number(r['references']['oracle'])} | "
            f"{r['cpu_seconds'] / 3600:.1f} |")
    lines += ["", "![SAINet's differences against the divergence](sweep.png)", ""]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (gains, levels) = plt.subplots(1, 2, figsize=(10, 3.6))
    series = [("best baseline", lambda r: r["against_best"]),
              *[(a, lambda r, a=a: r["ablations"][a]) for a in ABLATIONS]]
    for offset, (label, pick) in zip((-0.01, 0.0, 0.01), series):
        points = [(r["divergence"] + offset, pick(r)) for r in rows if pick(r) and pick(r)["difference"] is not None]
        if not points:
            continue
        xs = [x for x, _ in points]
        ys = np.array([c["difference"] for _, c in points])
        spans = np.array([(c["difference"] - c["ci95"][0], c["ci95"][1] - c["difference"]) if c["ci95"] else (0, 0)
                          for _, c in points]).T
        gains.errorbar(xs, ys, yerr=spans, marker="o", capsize=3, label=f"SAINet - {label}")
    gains.axhline(0, color="grey", linewidth=0.8)
    gains.set(xlabel="divergence", ylabel="overall test AUC difference", title="SAINet's gain (95% CI)")
    gains.legend(fontsize=8)
    xs = [r["divergence"] for r in rows]
    for label, values in [("SAINet", [r["sainet_mean"] for r in rows]),
                          ("best baseline", [r["best_baseline_mean"] for r in rows]),
                          ("attainable", [r["references"]["attainable"] for r in rows]),
                          ("popularity", [r["references"]["popularity"] for r in rows])]:
        known = [(x, v) for x, v in zip(xs, values) if v is not None]
        if known:
            levels.plot(*zip(*known), marker="o", label=label)
    levels.set(xlabel="divergence", ylabel="overall test AUC", title="Levels")
    levels.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", nargs="?", default="docs/results/synthetic-sweep")
    args = parser.parse_args()
    sweep = Path(args.sweep)
    rows = sweep_rows(sweep)
    (sweep / "sweep.json").write_text(json.dumps(rows, indent=2))
    (sweep / "README.md").write_text(markdown(rows))
    plot(rows, sweep / "sweep.png")
    print((sweep / "README.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
