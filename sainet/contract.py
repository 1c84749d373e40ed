"""The artifact contract: the one definition of what `sainet export` writes and `sainet serve` reads.

Torch-free on purpose (numpy at most, through `sainet.numeric`): the training code (`model/`, `export/`) writes from it and
the service validates against it, so a mismatch is a clear error when a version is loaded, never a
wrong score. Layout of a version directory:

    <root>/<name>/<version>/          version: a decimal integer, equal to meta.json's "version"
        model.onnx                    inputs `INPUT_NAMES`, output `OUTPUT_NAME` [B, C] in (0, 1)
        meta.json                     `format` = ARTIFACT_FORMAT, name, version, scenarios, schema, ...
        vocab/<feature>.json          raw values in index order (index = position + FIRST_KNOWN_INDEX)
        item_features.json            raw item id -> raw item-side feature values
        item_numeric.json             raw item id -> raw item-side numeric values (null: missing);
                                      meta.json's "item_numeric", present when the schema has any

Numeric features (`schema.numeric_features`: name, side and the statistics of `sainet.numeric`)
enter as the float32 inputs `request_numeric` and `cand_numeric`, transformed by the service.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from sainet.numeric import NumericFeature

ARTIFACT_FORMAT = 2             # 2: the numeric inputs (format 1 graphs lack them: re-export the run)
SUPPORTED_FORMATS = frozenset({2})

# Every vocabulary: 0 pads, 1 is out-of-vocabulary, known values start at 2.
PAD_INDEX = 0
OOV_INDEX = 1
FIRST_KNOWN_INDEX = 2
MISSING_VALUE = "<missing>"     # the raw value of a feature that a row or a request lacks

# Graph inputs in forward order, with their rank: [B, N], [B, N], [B], [B, F_request], [B, C], [B, C, F_item],
# [B, F_request_numeric], [B, C, F_item_numeric]. A feature-less input is 0 wide (it stays in the graph).
INPUT_RANKS: dict[str, int] = {
    "hist_items": 2, "hist_scenarios": 2, "target_scenario": 1,
    "request_features": 2, "cand_items": 2, "cand_features": 3,
    "request_numeric": 2, "cand_numeric": 3,
}
INPUT_NAMES: tuple[str, ...] = tuple(INPUT_RANKS)
NUMERIC_INPUTS = ("request_numeric", "cand_numeric")     # float32; every other input is int64
OUTPUT_NAME = "scores"

# Graphs of one version, by precision. fp32 is the reference and always present; int8 (dynamic
# quantisation of MatMul/Gemm weights) is written beside it and serves on CPU only where meta.json's
# `precisions.int8.passed` says it kept the scores (parity) and the test AUC (within INT8_AUC_BOUND).
FP32_GRAPH = "model.onnx"
INT8_GRAPH = "model.int8.onnx"
INT8_AUC_BOUND = 0.0005
PRECISIONS = ("fp32", "int8")

ITEM_NUMERIC_TABLE = "item_numeric.json"
ITEM_SIDE = "item"              # feature sides: "user" and "context" travel with the request, "item" per candidate
REQUIRED_VOCABULARIES = ("item_id", "scenario")


class ContractError(ValueError):
    """An artifact breaks the contract; the message says how."""


def input_specs(request_features: list[str], item_features: list[str], request_numeric: list[str] = (),
                item_numeric: list[str] = ()) -> list[dict]:
    """meta.json's "inputs": each graph input's name, dtype and shape (with the features it carries)."""
    carried = {"request_features": list(request_features), "cand_features": list(item_features),
               "request_numeric": list(request_numeric), "cand_numeric": list(item_numeric)}
    shapes = {
        "hist_items": ["batch", "history"], "hist_scenarios": ["batch", "history"], "target_scenario": ["batch"],
        "request_features": ["batch", len(request_features)], "cand_items": ["batch", "candidates"],
        "cand_features": ["batch", "candidates", len(item_features)],
        "request_numeric": ["batch", len(request_numeric)],
        "cand_numeric": ["batch", "candidates", len(item_numeric)],
    }
    specs = [{"name": name, "dtype": "float32" if name in NUMERIC_INPUTS else "int64", "shape": shapes[name]}
             for name in INPUT_NAMES]
    for spec in specs:
        if spec["name"] in carried:
            spec["features"] = carried[spec["name"]]
    return specs


def available_precisions(meta: Mapping) -> dict[str, dict]:
    """precision -> {"file", "passed", ...} for the graphs of an artifact. Artifacts written before
    `precisions` existed hold one graph, model.onnx, quantised when their `quantization` says so."""
    if isinstance(meta.get("precisions"), dict):
        return {p: dict(v) for p, v in meta["precisions"].items() if p in PRECISIONS and isinstance(v, dict)}
    only = "int8" if meta.get("quantization") else "fp32"
    return {only: {"file": FP32_GRAPH, "passed": True}}


def output_specs() -> list[dict]:
    return [{"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", "candidates"],
             "meaning": "click probability"}]


@dataclass(frozen=True)
class ArtifactMeta:
    """The parts of meta.json that serving relies on, checked."""

    name: str
    version: str
    scenarios: tuple[str, ...]
    history_length: int
    request_features: tuple[str, ...]
    item_features: tuple[str, ...]
    vocabularies: Mapping[str, str]          # feature -> path relative to the version directory
    item_feature_table: str
    request_numeric: tuple[NumericFeature, ...] = ()
    item_numeric: tuple[NumericFeature, ...] = ()
    item_numeric_table: str | None = None     # path of item_numeric.json, when item_numeric is not empty


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ContractError(message)


def parse_meta(meta: object, directory_version: str) -> ArtifactMeta:
    """Checks meta.json against the contract; `directory_version` is the name of its directory."""
    _require(isinstance(meta, dict), "meta.json is not a JSON object")
    missing = [k for k in ("format", "name", "version", "scenarios", "max_history_length", "schema",
                           "vocabularies", "item_features", "inputs", "outputs") if k not in meta]
    _require(not missing, f"meta.json lacks {missing}")
    _require(meta["format"] in SUPPORTED_FORMATS,
             f"artifact format {meta['format']!r} is not supported (this service reads {sorted(SUPPORTED_FORMATS)})")
    version = str(meta["version"])
    _require(version == directory_version,
             f"meta.json says version {version!r} but its directory is {directory_version!r}")
    scenarios = meta["scenarios"]
    _require(isinstance(scenarios, list) and len(scenarios) > 0 and all(isinstance(s, str) and s for s in scenarios),
             "scenarios must be a non-empty list of non-empty strings")
    _require(len(set(scenarios)) == len(scenarios), "scenarios must be unique")
    history_length = meta["max_history_length"]
    _require(isinstance(history_length, int) and history_length >= 1, "max_history_length must be an integer >= 1")
    features = meta["schema"].get("features") if isinstance(meta["schema"], dict) else None
    _require(isinstance(features, list) and all(isinstance(f, dict) and "name" in f and "side" in f
                                                for f in features), "schema.features must list {name, side}")
    request_features = tuple(f["name"] for f in features if f["side"] != ITEM_SIDE)
    item_features = tuple(f["name"] for f in features if f["side"] == ITEM_SIDE)
    vocabularies = meta["vocabularies"]
    _require(isinstance(vocabularies, dict), "vocabularies must map feature names to files")
    lacking = [n for n in (*REQUIRED_VOCABULARIES, *request_features, *item_features) if n not in vocabularies]
    _require(not lacking, f"vocabularies lack {lacking}")
    raw_numeric = meta["schema"].get("numeric_features", [])
    _require(isinstance(raw_numeric, list) and all(isinstance(f, dict) for f in raw_numeric),
             "schema.numeric_features must list {name, side, mean, std, low, high}")
    try:
        numeric = [NumericFeature.from_dict(f) for f in raw_numeric]
    except (TypeError, ValueError) as error:
        raise ContractError(f"schema.numeric_features: {error}") from None
    request_numeric = tuple(f for f in numeric if f.side != ITEM_SIDE)
    item_numeric = tuple(f for f in numeric if f.side == ITEM_SIDE)
    item_numeric_table = meta.get("item_numeric")
    _require(not item_numeric or isinstance(item_numeric_table, str),
             "meta.json lacks item_numeric (the table of item-side numeric values)")
    check_specs(meta["inputs"], meta["outputs"], request_features, item_features,
                [f.name for f in request_numeric], [f.name for f in item_numeric])
    return ArtifactMeta(str(meta["name"]), version, tuple(scenarios), history_length, request_features,
                        item_features, dict(vocabularies), str(meta["item_features"]), request_numeric,
                        item_numeric, item_numeric_table if item_numeric else None)


def check_specs(inputs: object, outputs: object, request_features: Iterable[str], item_features: Iterable[str],
                request_numeric: Iterable[str] = (), item_numeric: Iterable[str] = ()) -> None:
    """meta.json's declared inputs and outputs must be the contract's."""
    _require(isinstance(inputs, list) and isinstance(outputs, list), "inputs and outputs must be lists")
    expected = input_specs(list(request_features), list(item_features), list(request_numeric), list(item_numeric))
    declared = [(i.get("name"), i.get("features")) for i in inputs if isinstance(i, dict)]
    wanted = [(e["name"], e.get("features")) for e in expected]
    _require(declared == wanted, f"declared inputs {declared} differ from the contract's {wanted}")
    names = [o.get("name") for o in outputs if isinstance(o, dict)]
    _require(names == [OUTPUT_NAME], f"declared outputs {names} differ from the contract's {[OUTPUT_NAME]}")


def check_graph(inputs: Mapping[str, int], outputs: Iterable[str]) -> None:
    """The graph's own inputs (name -> rank) and output names, as the runtime reports them."""
    _require(set(inputs) == set(INPUT_NAMES),
             f"the graph's inputs {sorted(inputs)} are not the contract's {list(INPUT_NAMES)}")
    wrong_rank = {n: r for n, r in inputs.items() if r != INPUT_RANKS[n]}
    _require(not wrong_rank, f"graph inputs of the wrong rank: {wrong_rank} (expected {INPUT_RANKS})")
    outputs = list(outputs)
    _require(OUTPUT_NAME in outputs, f"the graph's outputs {outputs} do not include {OUTPUT_NAME!r}")
