"""scripts/sweep_report.py on two small study folders written as `sainet study` writes them."""

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "sweep_report.py"


@pytest.fixture(scope="module")
def sweep_report():
    spec = importlib.util.spec_from_file_location("sweep_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_study(folder: Path, aucs: dict[str, list[float]], cells_planned: int) -> None:
    folder.mkdir(parents=True)
    rows = [{"model": model, "variant": "main", "seed": seed, "scenario": "overall", "auc": auc}
            for model, values in aucs.items() for seed, auc in enumerate(values)]
    pd.DataFrame(rows).to_csv(folder / "results.csv", index=False)
    study = {"cells": len(rows), "cells_planned": cells_planned, "cell_cpu_seconds_total": 7200.0,
             "t_tests": {"a": {"outcome": "SAINet higher"}, "b": {"outcome": "SAINet higher"}},
             "references": {"item popularity (training CTR)": {"overall": 0.60},
                            "attainable (posterior given the history)": {"overall": 0.79},
                            "oracle (true click probability, full information)": {"overall": 0.84}}}
    (folder / "study.json").write_text(json.dumps(study))


def test_the_sweep_table_compares_sainet_per_divergence(tmp_path, sweep_report):
    write_study(tmp_path / "d=1", {"sainet": [0.75, 0.76, 0.755], "dnn": [0.70, 0.71, 0.705],
                                   "pepnet": [0.71, 0.72, 0.715], "sainet-no-sie": [0.70, 0.70, 0.71]}, 12)
    write_study(tmp_path / "d=0", {"sainet": [0.79], "dnn": [0.80]}, 18)
    rows = sweep_report.sweep_rows(tmp_path)
    assert [r["divergence"] for r in rows] == [0.0, 1.0]
    one = rows[1]
    assert one["best_baseline"] == "pepnet"            # the ablations are not baselines
    assert one["against_best"]["difference"] == pytest.approx(0.04)
    assert one["against_best"]["outcome"] == "SAINet higher"
    assert one["ablations"]["sainet-no-sie"]["difference"] == pytest.approx(0.755 - 0.7033333)
    assert one["ablations"]["sainet-no-stm"]["outcome"] == "pending"
    assert one["references"] == {"popularity": 0.60, "attainable": 0.79, "oracle": 0.84}
    text = sweep_report.markdown(rows)
    assert "| 0 | 2 of 18 (partial) |" in text and "SAINet higher in every scenario" in text
    sweep_report.plot(rows, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 0
