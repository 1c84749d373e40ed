"""The Scenario-Wise Rec protocol builds each of its models with that benchmark's sizes (its
scripts/run_movielens_rank_multi_domain.py constructor calls), batch norm, N(0, 1e-4) embeddings and
PyTorch's default Linear initialisation, on its inputs: age a min-max-scaled dense feature."""

import math

import pytest
import torch
from torch import nn

from model.data.datasets import DataOptions, prepare_dataset
from model.models import build_model
from model.study import (
    PROTOCOL_DEFAULTS,
    PROTOCOL_MODEL_OVERRIDES,
    PROTOCOL_SETTINGS,
    StudyConfig,
    cell_model_options,
    planned_cells,
    resolve_models,
)
from model.testing import random_batch, write_grouplens_folder

PROTOCOL = "scenario-wise-rec"
D = 16


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    folder = write_grouplens_folder(tmp_path_factory.mktemp("ml"))
    return prepare_dataset(DataOptions(dataset="movielens-1m", data_dir=str(folder), split="random",
                                       protocol=PROTOCOL)).schema


def protocol_model(name, schema):
    config = StudyConfig(models=(name,), protocol=PROTOCOL, model_overrides=(("embed_dim", D),))
    torch.manual_seed(0)
    return build_model(name, schema, **cell_model_options(config, name, {}))


def shapes(module: nn.Module) -> dict[str, tuple]:
    return {name: tuple(p.shape) for name, p in module.named_parameters() if not name.startswith("inputs.")}


def test_age_is_a_min_max_numeric_input(schema):
    assert "age" not in {f.name for f in schema.features}
    (age,) = schema.numeric_features
    assert (age.name, age.side, age.scaling) == ("age", "user", "min-max")
    # the bounds are the training split's minimum and maximum (ages 1, 25 and 56 in the tiny folder)
    assert {age.low, age.high} <= {1.0, 25.0, 56.0} and age.low < age.high
    assert age.transform([age.low, age.high, None]).tolist()[:2] == [0.0, 1.0]


def test_the_protocol_runs_its_five_models_on_seeds_2022_and_2023():
    models = resolve_models(PROTOCOL_DEFAULTS[PROTOCOL]["models"])
    assert set(models) == set(PROTOCOL_MODEL_OVERRIDES[PROTOCOL]) == {
        "shared-bottom", "mmoe", "ple", "adasparse", "pepnet"}
    config = StudyConfig(models=models, seeds=PROTOCOL_DEFAULTS[PROTOCOL]["seeds"],
                         first_seed=PROTOCOL_SETTINGS[PROTOCOL]["first_seed"], curves=False, protocol=PROTOCOL)
    assert {seed for _, _, _, seed in planned_cells(config)} == {2022, 2023}
    assert {k: PROTOCOL_SETTINGS[PROTOCOL][k] for k in ("epochs", "batch_size", "lr", "weight_decay", "embed_dim")} \
        == {"epochs": 1, "batch_size": 4096, "lr": 1e-3, "weight_decay": 1e-5, "embed_dim": 16}


def test_each_model_has_the_benchmarks_sizes(schema):
    sparse = 6 * D            # user, movie, gender, occupation, zip, first genre
    bench_input = sparse + D  # + age (theirs is 1 wide, raw; ours its numeric embedding, D wide)
    bn = "weight"             # batch norm parameters: weight and bias of the hidden width

    sb = shapes(protocol_model("shared-bottom", schema))       # bottom [128], towers [8]
    assert sb["bottom.0.weight"] == (128, bench_input) and sb[f"bottom.1.{bn}"] == (128,)
    for s in range(3):
        assert sb[f"towers.{s}.hidden.0.weight"] == (8, 128) and sb[f"towers.{s}.hidden.1.{bn}"] == (8,)
        assert sb[f"towers.{s}.logit.weight"] == (1, 8)
    assert "towers.3.logit.weight" not in sb

    mmoe = shapes(protocol_model("mmoe", schema))               # 3 experts [16], towers [8], BN'd gates
    assert [mmoe[f"experts.{e}.0.weight"] for e in range(3)] == [(16, bench_input)] * 3 and "experts.3.0.weight" not in mmoe
    assert all(mmoe[f"gates.{s}.0.weight"] == (3, bench_input) and mmoe[f"gates.{s}.1.{bn}"] == (3,) for s in range(3))
    assert all(mmoe[f"towers.{s}.hidden.0.weight"] == (8, 16) for s in range(3))

    ple = shapes(protocol_model("ple", schema))                 # 1 level, 2 specific + 1 shared experts [16]
    assert all(ple[f"levels.0.specific.{s}.{e}.0.weight"] == (16, bench_input) for s in range(3) for e in range(2))
    assert "levels.0.specific.0.2.0.weight" not in ple and "levels.1.shared.0.0.weight" not in ple
    assert ple["levels.0.shared.0.0.weight"] == (16, bench_input) and "levels.0.shared.1.0.weight" not in ple
    assert all(ple[f"levels.0.scenario_gates.{s}.0.weight"] == (3, bench_input) for s in range(3))
    assert not any(name.startswith("levels.0.shared_gate") for name in ple)   # the last level has none
    assert all(ple[f"towers.{s}.hidden.0.weight"] == (8, 16) for s in range(3))

    ada_model = protocol_model("adasparse", schema)             # mlp [32, 32], dropout 0.2, fusion pruners
    ada = shapes(ada_model)
    ada_input = sparse + D    # agn = the sparse features, + the scenario field
    assert ada["hidden.0.0.weight"] == (32, ada_input) and ada["hidden.1.0.weight"] == (32, 32)
    assert ada["input_pruner.linear.weight"] == (ada_input, ada_input + D)
    assert ada["pruners.0.linear.weight"] == (32, 32 + D) and ada["pruners.1.linear.weight"] == (32, 32 + D)
    assert not any(name.endswith("linear.bias") for name in ada) and ada["logit.weight"] == (1, 32)
    assert [m.p for m in ada_model.modules() if isinstance(m, nn.Dropout)] == [0.2, 0.2]
    assert ada_model.config.form == "fusion" and ada_model.config.epsilon == 1e-2
    assert (ada_model.config.alpha, ada_model.config.alpha_step, ada_model.config.beta) == (1.0, 1e-4, 2.0)

    pp = shapes(protocol_model("pepnet", schema))               # PPNet fcn [128, 64, 32], one tower per domain
    pp_input = 2 * D + 4 * D + D + D     # ids (user, movie) + gender, occupation, zip, genre + age + domain
    assert not any(name.startswith("epnet") for name in pp)
    for s in range(3):
        assert [pp[f"towers.{s}.hidden.{i}.0.weight"] for i in range(3)] == [(128, pp_input), (64, 128), (32, 64)]
        for i, width in enumerate((128, 64, 32)):      # GateNU(hidden_dim=output_dim)
            assert pp[f"towers.{s}.gates.{i}.net.0.weight"] == (width, pp_input)
            assert pp[f"towers.{s}.gates.{i}.net.2.weight"] == (width, width)
        assert pp[f"towers.{s}.logit.weight"] == (1, 32)


@pytest.mark.parametrize("name", sorted(PROTOCOL_MODEL_OVERRIDES[PROTOCOL]))
def test_embeddings_are_n_0_1e_4_and_linear_layers_pytorchs_default(schema, name):
    model = protocol_model(name, schema)
    tables = [m.weight for m in model.modules() if isinstance(m, nn.Embedding) and m.weight.shape[0] > 2]
    values = torch.cat([t[2:].flatten() for t in tables])        # past padding and OOV rows
    assert values.abs().max() < 1e-3 and 5e-5 < values.std() < 2e-4
    for linear in (m for m in model.modules() if isinstance(m, nn.Linear)):
        bound = 1 / math.sqrt(linear.in_features)                # Kaiming-uniform's bound, as built
        assert linear.weight.abs().max() <= bound and linear.weight.abs().max() > bound / 2
    model.train()
    logits = model(random_batch(schema, batch=8, candidates=2))  # batch norm in training mode
    assert logits.shape == (8, 2) and torch.isfinite(logits).all()
