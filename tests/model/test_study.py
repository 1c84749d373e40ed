import json
import logging
import subprocess
import sys

import pandas as pd

from sainet.cli import main

TINY = ["--synthetic-users", "120", "--synthetic-items", "40", "--synthetic-events", "15", "--history-length", "6"]


def test_study_writes_every_report_and_resumes(tmp_path, capsys):
    out = tmp_path / "report"
    args = ["study", *TINY, "--models", "sainet,sainet-no-tif", "--seeds", "2", "--curve-seeds", "1",
            "--epochs", "1", "--batch-size", "512", "--lr-grid", "none", "--threads", "1", "--model-opt", "embed_dim=8",
            "--model-opt", "tower=16,8", "--out", str(out)]
    assert main(args) == 0
    for name in ("results.csv", "results.md", "ablation.md", "ablation.png", "curves.md", "curve_blocks.png",
                 "curve_gamma.png", "curve_heads.png", "study.json"):
        assert (out / name).exists(), name
    curves = (out / "curves.md").read_text()
    assert "## blocks" in curves and "| **2** | 2 |" in curves and " → " in curves
    results = pd.read_csv(out / "results.csv")
    main_rows = results[results.variant == "main"]
    assert set(main_rows.model) == {"sainet", "sainet-no-tif"} and set(main_rows.seed) == {0, 1}
    assert set(main_rows.scenario) == {"overall", "s0", "s1", "s2"}
    assert main_rows.auc.between(0, 1).all() and (main_rows.logloss > 0).all()
    table = (out / "results.md").read_text()
    assert "sainet-no-tif" in table and "±" in table and "**" in table
    assert "item popularity (training CTR)" in table and "oracle (true click probability" in table
    assert "attainable (posterior given the history)" in table
    ablation = (out / "ablation.md").read_text()
    assert "Each variant against SAINet" in ablation and "| sainet-no-tif | overall |" in ablation
    meta = json.loads((out / "study.json").read_text())
    assert isinstance(meta["ablation_t_tests"]["sainet-no-tif"]["overall"]["t"], float)
    assert meta["command"].startswith("sainet study") and meta["commit"] and meta["machine"]
    assert 0 < meta["references"]["item popularity (training CTR)"]["overall"] < 1
    cells = sorted(p.name for p in (out / "cells").iterdir())
    # 2 models x 2 seeds, plus the curve points other than SAINet's defaults (3 + 5 + 3) with 1 seed.
    assert len(cells) == 4 + 11

    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    capsys.readouterr()
    assert main(args) == 0                 # rerun: every cell is skipped, tables rebuilt
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()} == stamps
    meta = json.loads((out / "study.json").read_text())
    first, rerun = meta["invocations"]
    assert (first["cells_trained"], rerun["cells_trained"]) == (15, 0) and rerun["trained"] is False
    assert meta["wall_seconds_all_invocations"] == first["wall_seconds"]   # a rerun that trains nothing is left out


def test_scenario_wise_rec_protocol_refuses_to_change_its_setting(tmp_path, capsys):
    base = ["study", "--protocol", "scenario-wise-rec", "--out", str(tmp_path / "r")]
    assert main([*base, "--dataset", "movielens-1m", "--data-dir", str(tmp_path), "--lr", "0.01"]) == 2
    assert "fixes --lr 0.001" in capsys.readouterr().err
    assert main([*base, "--data-dir", str(tmp_path)]) == 2                  # default dataset is synthetic
    assert "fixes --dataset movielens-1m" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_parallel_workers_skip_a_cell_another_worker_holds(tmp_path, caplog):
    out = tmp_path / "report"
    args = ["study", *TINY, "--models", "dnn", "--seeds", "2", "--no-curves", "--epochs", "1",
            "--batch-size", "512", "--lr-grid", "none", "--threads", "1", "--model-opt", "tower=16,8", "--out", str(out)]
    lock_path = out / "cells" / "dnn__main__seed0.lock"
    lock_path.parent.mkdir(parents=True)
    # Another worker, as a separate process, holds seed 0's claim.
    holder = subprocess.Popen(
        [sys.executable, "-c", ("import fcntl, sys; f = open(sys.argv[1], 'a'); "
                                "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()"),
         str(lock_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with caplog.at_level(logging.INFO, logger="model.study"):
            assert main(args) == 0
        assert not (out / "cells" / "dnn__main__seed0.json").exists()
        assert (out / "cells" / "dnn__main__seed1.json").exists()
        assert "being trained by another worker" in caplog.text
        assert "Partial: 1 of 2 cells finished" in (out / "results.md").read_text()
        assert json.loads((out / "study.json").read_text())["invocations"][-1]["cells_trained"] == 1
    finally:
        holder.communicate(input="", timeout=30)    # the holder exits, and its lock goes with it
    assert main([*args, "--report-only"]) == 0      # rebuilds the tables, trains nothing
    assert not (out / "cells" / "dnn__main__seed0.json").exists()
    meta = json.loads((out / "study.json").read_text())
    assert meta["cells_planned"] == 2 and meta["invocations"][-1]["trained"] is False
    assert main(args) == 0
    assert (out / "cells" / "dnn__main__seed0.json").exists()
    assert "Partial" not in (out / "results.md").read_text()
    assert not list((out / "cells").glob("*.lock"))


def test_t_test_outcome_names_the_higher_model():
    from model.study import auc_table

    rows = [{"model": m, "seed": seed, "scenario": s, "auc": auc + 0.001 * seed}
            for seed in range(5)
            for m, aucs in {"sainet": {"s0": 0.60, "s1": 0.700, "s2": 0.80},
                            "dnn": {"s0": 0.70, "s1": 0.7005, "s2": 0.70},
                            "mmoe": {"s0": 0.65, "s1": 0.650, "s2": 0.65}}.items()
            for s, auc in aucs.items()]
    _, tests = auc_table(pd.DataFrame(rows), ["dnn", "mmoe", "sainet"], ["s0", "s1", "s2"])
    assert tests["s0"]["best_baseline"] == "dnn" and tests["s0"]["t"] < 0 and tests["s0"]["p"] < 0.05
    assert tests["s0"]["outcome"] == "SAINet lower"
    assert tests["s1"]["outcome"] == "no significant difference"
    assert tests["s2"]["outcome"] == "SAINet higher"
    first_seed = pd.DataFrame([r for r in rows if r["seed"] == 0])
    _, one_seed_tests = auc_table(first_seed, ["dnn", "sainet"], ["s0"])
    assert one_seed_tests["s0"]["outcome"] == "n/a (too few seeds)"


def test_curves_pair_each_point_with_the_default_by_seed_on_validation(tmp_path):
    from model.study import curves_markdown, curves_report

    def cell(variant, seed, valid, test):
        return {"model": "sainet", "variant": variant, "seed": seed, "scenario": "overall", "auc": test,
                "valid_auc": valid}
    # the default (blocks=2) is the main table's cells, 4 seeds; blocks=1 is above it by about 0.01 on
    # each seed it has, blocks=3 below by 0.02 on average; its test AUC is higher (it never decides anything)
    rows = [cell("main", seed, 0.70 + 0.01 * seed, 0.71) for seed in range(4)]
    rows += [cell("blocks=1", seed, 0.70 + 0.01 * seed + d, 0.70) for seed, d in enumerate((0.01, 0.012, 0.008))]
    rows += [cell("blocks=3", seed, 0.70 + 0.01 * seed - d, 0.75) for seed, d in enumerate((0.01, 0.03, 0.02))]
    rows.append(cell("gamma=0.8", 0, None, 0.69))          # a cell from before validation AUC was recorded
    curves = curves_report(pd.DataFrame(rows), tmp_path)      # no cell files: no history path
    assert set(curves) == {"blocks", "gamma"}              # heads: the default alone is no curve
    one, default, three = curves["blocks"]
    assert (one["value"], default["default"], default["seeds"]) == (1, True, 4)
    assert abs(one["valid_minus_default"] - 0.01) < 1e-12 and one["paired_t_p"] < 0.05
    assert abs(three["valid_minus_default"] + 0.02) < 1e-12 and 0.01 < three["paired_t_p"] < 0.1
    assert default["valid_minus_default"] is None and default["paired_t_p"] is None
    gamma_low = curves["gamma"][0]
    assert gamma_low["valid_auc_mean"] is None and gamma_low["valid_minus_default"] is None
    table = curves_markdown(curves)
    assert "| **2** | 4 | 0.7150 ± 0.0129 |" in table and "| 3 | 3 | 0.6900 ± 0.0100 | -0.0200 |" in table
    assert default["history_path"]["cells"] == 0 and "| n/a | n/a | n/a → n/a |" in table


def test_study_tunes_the_learning_rate_on_validation_and_keeps_cells_apart(tmp_path):
    out, cells = tmp_path / "report", tmp_path / "data" / "cells"
    args = ["study", *TINY, "--models", "dnn,sainet", "--seeds", "2", "--no-curves", "--epochs", "2",
            "--batch-size", "256", "--eval-every-steps", "3", "--patience", "2", "--lr-grid", "0.0001,0.01",
            "--threads", "1", "--model-opt", "embed_dim=8", "--model-opt", "tower=16,8",
            "--cells-dir", str(cells), "--out", str(out)]
    assert main(args) == 0
    assert not (out / "cells").exists()
    names = sorted(p.stem for p in cells.glob("*.json"))
    # 2 models x 2 grid points, then 2 models x 2 seeds (seed 0 being the chosen grid point)
    assert len(names) == 8 and "dnn__lr=0.0001__seed0" in names and "dnn__main__seed1" in names
    tuning = json.loads((out / "tuning.json").read_text())
    for model in ("dnn", "sainet"):
        grid = tuning[model]["grid"]
        assert [p["lr"] for p in grid] == [0.0001, 0.01] and all(p["finished"] for p in grid)
        best = max(grid, key=lambda p: p["valid_auc"])["lr"]
        assert tuning[model]["chosen_lr"] == best
        seed0 = json.loads((cells / f"{model}__main__seed0.json").read_text())
        chosen = json.loads((cells / f"{model}__lr={best:g}__seed0.json").read_text())
        assert seed0["copied_from"] == f"{model}__lr={best:g}__seed0" and seed0["rows"] == chosen["rows"]
        seed1 = json.loads((cells / f"{model}__main__seed1.json").read_text())
        assert seed1["learning_rate"] == best and seed1["stop_reason"] in ("early_stop", "cap")
        assert 0 < seed1["best_step"] <= seed1["steps"] and 0 < seed1["valid_auc"] < 1
    report = (out / "results.md").read_text()
    assert "Learning rate, chosen on validation" in report and "## Convergence" in report
    assert "SAINet - baseline [95% CI]" in report
    meta = json.loads((out / "study.json").read_text())
    assert meta["cells_dir"] == str(cells) and set(meta["learning_rates"]) == {"dnn", "sainet"}
    assert meta["t_tests"]["overall"]["outcome"] in ("no significant difference", "SAINet higher", "SAINet lower")
    assert isinstance(meta["stopped_at_cap_improving"], list)
    stamps = {p.name: p.stat().st_mtime_ns for p in cells.iterdir()}
    assert main(args) == 0                 # resumes: nothing retrained
    assert {p.name: p.stat().st_mtime_ns for p in cells.iterdir()} == stamps

    # The other grid point now wins for dnn (as when a grid grows): dnn's main cells, trained at the
    # old rate, leave the report, then are trained again at the new one; sainet's stay as they are.
    old_lr = tuning["dnn"]["chosen_lr"]
    new_lr = next(p["lr"] for p in tuning["dnn"]["grid"] if p["lr"] != old_lr)
    point = cells / f"dnn__lr={new_lr:g}__seed0.json"
    point.write_text(json.dumps({**json.loads(point.read_text()), "valid_auc": 1.0}))
    assert main([*args, "--report-only"]) == 0
    assert "2 more trained at a learning rate no longer chosen" in (out / "results.md").read_text()
    results = pd.read_csv(out / "results.csv")
    assert set(results[results.variant == "main"].model) == {"sainet"}
    assert main(args) == 0
    for seed in (0, 1):
        assert json.loads((cells / f"dnn__main__seed{seed}.json").read_text())["learning_rate"] == new_lr
        kept = f"sainet__main__seed{seed}.json"
        assert (cells / kept).stat().st_mtime_ns == stamps[kept]
    assert "no longer chosen" not in (out / "results.md").read_text()


def test_intervals_decide_the_outcome():
    import numpy as np

    from model.study import confidence_interval, difference_interval, interval_outcome

    a, b = np.array([0.70, 0.71, 0.72]), np.array([0.60, 0.61, 0.62])
    low, high = confidence_interval(a)
    assert low < 0.71 < high and confidence_interval(a[:1]) is None
    assert interval_outcome(difference_interval(a, b)) == "SAINet higher"
    assert interval_outcome(difference_interval(b, a)) == "SAINet lower"
    assert interval_outcome(difference_interval(a, a + 0.001)) == "no significant difference"
    assert interval_outcome(difference_interval(a[:1], b)) == "n/a (too few seeds)"


def test_readings_are_compared_on_validation_and_one_is_chosen(tmp_path):
    from model.study import READINGS

    out = tmp_path / "report"
    args = ["study", *TINY, "--models", "sainet", "--seeds", "1", "--reading-seeds", "1", "--no-curves",
            "--epochs", "1", "--batch-size", "512", "--lr-grid", "none", "--threads", "1",
            "--model-opt", "embed_dim=8", "--model-opt", "tower=16,8", "--out", str(out)]
    assert main(args) == 0
    cells = sorted(p.stem for p in (out / "cells").iterdir())
    # the literal reading is the main SAINet cell; every other reading has a cell of its own
    assert cells == sorted(["sainet__main__seed0",
                            *(f"sainet__reading={n}__seed0" for n, o in READINGS.items() if o)])
    study = json.loads((out / "study.json").read_text())
    readings = study["readings"]
    # one seed gives no paired test, so no evidence against the paper's literal reading
    assert all(r["paired_t_p"] is None for r in readings["readings"].values())
    assert readings["chosen"] == "literal"
    overrides = json.loads((out / "cells" / "sainet__reading=tif-scaled__seed0.json").read_text())["overrides"]
    assert overrides == {"tif_scaled": True}
    assert f"**{readings['chosen']}**" in (out / "readings.md").read_text()
    assert readings["readings"]["tif-scaled"]["history_path"]["cells"] == 1   # each SAINet cell records its history path
    assert study["history_path"]["sainet"]["cells"] == 1
    assert "## What the history path does" in (out / "ablation.md").read_text()


def test_a_reading_replaces_the_literal_one_only_on_a_significant_validation_gain():
    from model.study import choose_reading

    def reading(delta, p, mean):
        return {"valid_minus_literal": delta, "paired_t_p": p, "valid_auc_mean": mean}
    literal = {"literal": reading(None, None, 0.70)}
    assert choose_reading({**literal, "a": reading(+0.002, 0.34, 0.702)}) == "literal"     # inside the noise
    assert choose_reading({**literal, "a": reading(-0.004, 0.01, 0.696)}) == "literal"     # significantly worse
    assert choose_reading({**literal, "a": reading(+0.003, 0.01, 0.703), "b": reading(+0.005, 0.04, 0.705),
                           "c": reading(+0.009, 0.20, 0.709)}) == "b"


def test_a_cell_capped_while_improving_is_trained_again_when_the_budget_grows(tmp_path):
    cells = tmp_path / "cells"

    def study(epochs: int) -> dict:
        args = ["study", *TINY, "--models", "dnn", "--seeds", "1", "--no-curves", "--epochs", str(epochs),
                "--batch-size", "256", "--eval-every-steps", "0", "--patience", "50", "--lr-grid", "none",
                "--threads", "1", "--model-opt", "embed_dim=8", "--model-opt", "tower=16,8",
                "--cells-dir", str(cells), "--out", str(tmp_path / "report")]
        assert main(args) == 0
        return json.loads((cells / "dnn__main__seed0.json").read_text())

    short = study(1)
    assert short["stop_reason"] == "cap" and short["budget"]["epochs"] == 1     # patience 50 never acts
    longer = study(2)
    assert longer["steps"] == 2 * short["steps"] and longer["budget"]["epochs"] == 2
    stamp = (cells / "dnn__main__seed0.json").stat().st_mtime_ns
    assert study(2) == longer and study(1) == longer     # the same or a smaller budget: nothing retrained
    assert (cells / "dnn__main__seed0.json").stat().st_mtime_ns == stamp


def test_a_cell_stopped_mid_training_is_continued_from_its_checkpoint(tmp_path, monkeypatch):
    """A worker killed while training a cell (here: at its second checkpoint) leaves the cell's
    checkpoint; the next worker continues from it and writes the cell an uninterrupted run writes."""
    import model.train as train_module

    def study(cells) -> dict:
        args = ["study", *TINY, "--models", "dnn", "--seeds", "1", "--no-curves", "--epochs", "3",
                "--batch-size", "128", "--eval-every-steps", "3", "--patience", "50", "--lr-grid", "none",
                "--threads", "1", "--model-opt", "embed_dim=8", "--model-opt", "tower=16,8",
                "--checkpoint-every-steps", "2", "--cells-dir", str(cells), "--out", str(tmp_path / "report")]
        assert main(args) == 0
        return json.loads((cells / "dnn__main__seed0.json").read_text())

    whole = study(tmp_path / "whole")
    save, calls = train_module.save_training_state, []

    def killed_at_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt      # as a worker's SIGINT would
        save(*args, **kwargs)

    monkeypatch.setattr(train_module, "save_training_state", killed_at_the_second)
    cut = tmp_path / "cut"
    try:
        study(cut)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the run was not interrupted")
    monkeypatch.setattr(train_module, "save_training_state", save)
    assert not (cut / "dnn__main__seed0.json").exists()
    assert (cut / ".scratch" / "dnn__main__seed0" / train_module.TRAINING_STATE).exists()

    resumed = study(cut)
    assert resumed["resumed"] is True and whole["resumed"] is False
    timing = ("seconds", "cpu_seconds", "resumed")
    assert {k: v for k, v in resumed.items() if k not in timing} == {k: v for k, v in whole.items() if k not in timing}
    assert not (cut / ".scratch").exists()
