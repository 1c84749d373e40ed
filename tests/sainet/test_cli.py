import json

import pytest

from sainet.cli import main

TINY = ["--synthetic-users", "200", "--synthetic-items", "50", "--synthetic-events", "20", "--history-length", "8"]


def test_prepare_train_evaluate(tmp_path, capsys):
    assert main(["data", "prepare", *TINY, "--out", str(tmp_path / "prepared")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["examples"] == {"train": 3200, "valid": 400, "test": 400}
    for name in ("train.parquet", "valid.parquet", "test.parquet", "schema.json", "vocab/item_id.json",
                 "vocab/scenario.json", "item_features.parquet"):
        assert (tmp_path / "prepared" / name).exists(), name

    run = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--batch-size", "512", "--threads", "1",
                 "--model-opt", "embed_dim=16", "--model-opt", "tower=32,16", "--blocks", "1",
                 "--out", str(run)]) == 0
    trained = json.loads(capsys.readouterr().out)
    config = json.loads((run / "config.json").read_text())
    assert config["model_config"]["tower"] == [32, 16] and config["model_config"]["blocks"] == 1
    assert main(["evaluate", "--run", str(run)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["auc"] == trained["auc"]


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    assert main(["data", "prepare", "--dataset", "movielens-1m", "--out", str(tmp_path)]) == 2
    assert "--data-dir" in capsys.readouterr().err
    assert main(["train", "--model", "sainet-no-sei", "--out", str(tmp_path)]) == 2
    assert "unknown model 'sainet-no-sei'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="gama"):
        main(["train", "--model-opt", "gama=2", "--out", str(tmp_path)])
    assert main(["evaluate", "--run", str(tmp_path / "missing")]) == 2
    assert "checkpoint.pt" in capsys.readouterr().err
