"""The artifact contract (`sainet.contract`): what export writes passes it, what breaks it is refused."""

from __future__ import annotations

import copy

import pytest

from model.batch import INPUT_NAMES, Batch
from model.data.schema import FIRST_KNOWN_INDEX, OOV_INDEX, PAD_INDEX
from sainet import contract
from sainet.contract import ContractError, check_graph, input_specs, output_specs, parse_meta


def meta() -> dict:
    return {
        "format": contract.ARTIFACT_FORMAT, "name": "sainet", "version": "3", "scenarios": ["a", "b"],
        "max_history_length": 5,
        "schema": {"features": [{"name": "gender", "side": "user"}, {"name": "genre", "side": "item"}]},
        "vocabularies": {"item_id": "vocab/item_id.json", "scenario": "vocab/scenario.json",
                         "gender": "vocab/gender.json", "genre": "vocab/genre.json"},
        "item_features": "item_features.json",
        "inputs": input_specs(["gender"], ["genre"]), "outputs": output_specs(),
    }


def test_the_training_code_uses_the_contract_layout():
    assert Batch._fields == INPUT_NAMES == contract.INPUT_NAMES
    assert (PAD_INDEX, OOV_INDEX, FIRST_KNOWN_INDEX) == (contract.PAD_INDEX, contract.OOV_INDEX,
                                                         contract.FIRST_KNOWN_INDEX)


def test_a_valid_meta_parses():
    parsed = parse_meta(meta(), "3")
    assert parsed.request_features == ("gender",) and parsed.item_features == ("genre",)
    assert parsed.scenarios == ("a", "b") and parsed.history_length == 5


AGE = {"name": "age", "side": "user", "mean": 35.0, "std": 12.0, "low": 18.0, "high": 80.0}


def test_numeric_features_parse_with_their_statistics():
    value = meta()
    value["schema"]["numeric_features"] = [AGE]
    value["inputs"] = input_specs(["gender"], ["genre"], ["age"], [])
    parsed = parse_meta(value, "3")
    assert [f.name for f in parsed.request_numeric] == ["age"] and parsed.item_numeric == ()
    assert parsed.request_numeric[0].transform([None, 80.0, 1e9]).tolist() == [0.0, 3.75, 3.75]


def broken(edit) -> dict:
    value = copy.deepcopy(meta())
    edit(value)
    return value


@pytest.mark.parametrize("edit,message", [
    (lambda m: m.update(format=1), "format"),     # format 1 graphs lack the numeric inputs
    (lambda m: m.pop("inputs"), "lacks"),
    (lambda m: m.update(version="4"), "directory"),
    (lambda m: m.update(scenarios=[]), "scenarios"),
    (lambda m: m.update(scenarios=["a", "a"]), "unique"),
    (lambda m: m["vocabularies"].pop("item_id"), "item_id"),
    (lambda m: m["vocabularies"].pop("genre"), "genre"),
    (lambda m: m.update(max_history_length=0), "max_history_length"),
    (lambda m: m.update(outputs=[{"name": "probability"}]), "outputs"),
    (lambda m: m["inputs"].reverse(), "inputs"),
    (lambda m: m.update(inputs=input_specs([], ["genre"])), "inputs"),
    (lambda m: m["schema"].update(numeric_features=[dict(AGE, std=0.0)]), "std > 0"),
    (lambda m: m["schema"].update(numeric_features=[dict(AGE, low=float("nan"))]), "finite"),
    (lambda m: m["schema"].update(numeric_features=[AGE]), "inputs"),       # declared, but not a graph input
    (lambda m: m["schema"].update(numeric_features=[dict(AGE, side="item")]) or m.update(
        inputs=input_specs(["gender"], ["genre"], [], ["age"])), "item_numeric"),
])
def test_a_broken_meta_is_refused_with_the_reason(edit, message):
    with pytest.raises(ContractError, match=message):
        parse_meta(broken(edit), "3")


def test_the_graph_must_have_the_contract_inputs_and_output():
    check_graph(dict(contract.INPUT_RANKS), ["scores"])
    with pytest.raises(ContractError, match="scores"):
        check_graph(dict(contract.INPUT_RANKS), ["probability"])
    with pytest.raises(ContractError, match="inputs"):
        check_graph({**contract.INPUT_RANKS, "extra": 1}, ["scores"])
    with pytest.raises(ContractError, match="rank"):
        check_graph({**contract.INPUT_RANKS, "target_scenario": 2}, ["scores"])
