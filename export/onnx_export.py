"""Export a trained run to a versioned ONNX artifact, after a parity check against PyTorch.

Artifact layout (the one contract between export and serving):

    <root>/<name>/<version>/
        model.onnx            the fp32 graph; inputs and output as `sainet.contract` defines them:
                              `scores` [B, C] in (0, 1)
        model.int8.onnx       with `--quantize int8` (the CLI's default): its dynamically quantised twin,
                              checked and judged in meta.json's `precisions.int8`
        meta.json             name, version, schema, scenarios, inputs/outputs, parity figures, ...
        vocab/<feature>.json  raw values in index order (index = position + 2; 0 pad, 1 OOV)
        item_features.json    raw item id -> raw item-side feature values
        item_numeric.json     raw item id -> raw item-side numeric values (when the schema has any)
        source/checkpoint.pt  the PyTorch weights the graph came from (for `sainet bench`'s eager
                              baseline and for audits; the service never reads it)

Versions are increasing integers; a version directory appears atomically (written to a temporary
sibling, then renamed), and only after the parity check passed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.batch import Batch, examples_to_batch
from model.data.schema import FeatureSchema
from model.testing import random_inputs
from model.train import LoadedRun, load_run
from sainet.contract import (ARTIFACT_FORMAT, FIRST_KNOWN_INDEX, FP32_GRAPH, INPUT_NAMES, INT8_AUC_BOUND, INT8_GRAPH,
                             ITEM_NUMERIC_TABLE, OOV_INDEX, OUTPUT_NAME, PAD_INDEX, input_specs, output_specs)

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 1e-5


class ExportError(RuntimeError):
    """The export was refused; nothing was written."""


class ScoringModule(nn.Module):
    """Positional-input wrapper: the exported graph returns probabilities [B, C]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    # named parameters (torch.export names the graph's inputs after them), in `INPUT_NAMES` order
    def forward(self, hist_items, hist_scenarios, target_scenario, request_features, cand_items, cand_features,
                request_numeric, cand_numeric):
        batch = Batch(hist_items, hist_scenarios, target_scenario, request_features, cand_items, cand_features,
                      request_numeric, cand_numeric)
        return torch.sigmoid(self.model(batch))


def export_onnx(module: ScoringModule, schema: FeatureSchema, path: Path, opset: int = 18) -> None:
    batch = torch.export.Dim("batch", min=1)
    history = torch.export.Dim("history", min=1)
    candidates = torch.export.Dim("candidates", min=1)
    dynamic_shapes = {
        "hist_items": {0: batch, 1: history}, "hist_scenarios": {0: batch, 1: history},
        "target_scenario": {0: batch}, "request_features": {0: batch},
        "cand_items": {0: batch, 1: candidates}, "cand_features": {0: batch, 1: candidates},
        "request_numeric": {0: batch}, "cand_numeric": {0: batch, 1: candidates},
    }
    example = random_inputs(schema, batch=3, length=5, candidates=4, seed=0)
    program = torch.onnx.export(module, example, dynamic_shapes=dynamic_shapes, dynamo=True,
                                opset_version=opset, input_names=list(INPUT_NAMES),
                                output_names=[OUTPUT_NAME], verbose=False)
    program.save(str(path))


def parity_cases(run: LoadedRun, real_batch: Batch | None) -> dict[str, tuple[torch.Tensor, ...]]:
    schema = run.schema
    n = schema.history_length
    cases = {
        "random_b8_c20": random_inputs(schema, 8, n, 20, seed=1, empty_rows=(0,)),
        "no_history_c1": random_inputs(schema, 2, n, 1, seed=2, empty_rows=(0, 1)),
        "c1": random_inputs(schema, 5, n, 1, seed=3),
        "c500": random_inputs(schema, 2, n, 500, seed=4, empty_rows=(1,)),
        "short_history_b1": random_inputs(schema, 1, 3, 7, seed=5),
    }
    if real_batch is not None:
        cases["real_test_examples"] = tuple(real_batch)
    return cases


def check_parity(session, module: ScoringModule, cases: dict, tolerance: float = float("inf")) -> dict[str, float]:
    figures = {}
    with torch.no_grad():
        for name, inputs in cases.items():
            expected = module(*inputs).numpy()
            got = session.run([OUTPUT_NAME], {k: v.numpy() for k, v in zip(INPUT_NAMES, inputs)})[0]
            if got.shape != expected.shape or not np.isfinite(got).all():
                raise ExportError(f"parity case {name!r}: ONNX output shape {got.shape} / finite "
                                  f"{np.isfinite(got).all()} vs PyTorch {expected.shape}")
            figures[name] = float(np.abs(got - expected).max())
    worst = max(figures, key=figures.get)
    if figures[worst] > tolerance:
        raise ExportError(f"ONNX Runtime differs from PyTorch by {figures[worst]:.3g} on case {worst!r} "
                          f"(tolerance {tolerance:g}); nothing was written")
    return figures


def real_test_batch(run: LoadedRun, rows: int = 256) -> Batch | None:
    """A batch of the run's real test examples, when its dataset can still be rebuilt."""
    if run.data_options is None:
        if run.data_options_problem:
            log.warning("parity on real inputs skipped: %s", run.data_options_problem)
        return None
    from model.data.datasets import prepare_dataset

    try:
        data = prepare_dataset(run.data_options)
    except (FileNotFoundError, ValueError) as error:
        log.warning("parity on real inputs skipped: %s", error)
        return None
    test = data.splits["test"]
    picked = np.random.default_rng(0).choice(len(test), size=min(rows, len(test)), replace=False)
    batch, _ = examples_to_batch(test, np.sort(picked))
    return batch


def test_split_auc(run: LoadedRun, sessions: dict[str, object], batch_size: int = 4096) -> dict | None:
    """Test AUC of each ONNX graph on the run's whole test split (None when the data is gone), so a
    quantised graph's cost in ranking quality is measured, not assumed."""
    from model.data.datasets import prepare_dataset
    from model.metrics import safe_auc

    if run.data_options is None:
        if run.data_options_problem:
            log.warning("test AUC of the exported graphs skipped: %s", run.data_options_problem)
        return None
    try:
        test = prepare_dataset(run.data_options).splits["test"]
    except (FileNotFoundError, ValueError) as error:
        log.warning("test AUC of the exported graphs skipped: %s", error)
        return None
    scores = {}
    for name, session in sessions.items():
        parts = []
        for start in range(0, len(test), batch_size):
            batch, _ = examples_to_batch(test, slice(start, start + batch_size))
            parts.append(session.run([OUTPUT_NAME], {k: v.numpy() for k, v in zip(INPUT_NAMES, batch)})[0][:, 0])
        scores[name] = np.concatenate(parts)
    stacked = np.stack(list(scores.values()))
    return {"examples": len(test), "auc": {name: safe_auc(test.label, s) for name, s in scores.items()},
            "max_abs_diff_between_graphs": float(np.ptp(stacked, axis=0).max()),
            "mean_abs_diff_between_graphs": float(np.ptp(stacked, axis=0).mean())}


def next_version(model_root: Path) -> str:
    versions = [int(p.name) for p in model_root.glob("*") if p.is_dir() and p.name.isdigit()]
    return str(max(versions, default=0) + 1)


INT8_TOLERANCE = 1e-2   # int8 weights move scores by ~1e-3; more means the quantised graph is broken


def quantize_int8(fp32_path: Path, out_path: Path) -> None:
    """Dynamic int8 quantisation of the MatMul/Gemm weights (activations quantised per run). On CPU
    it halves the dense towers' cost, which dominates at C = 100 (docs/performance.md)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32_path), str(out_path), weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul", "Gemm"])


def int8_checks(run: LoadedRun, module: ScoringModule, cases: dict, fp32_session, int8_session,
                tolerance: float, real_inputs: bool) -> dict:
    """meta.json's `precisions.int8`: parity against PyTorch, test AUC against fp32, and the verdict."""
    parity = check_parity(int8_session, module, cases)
    test = test_split_auc(run, {"fp32": fp32_session, "int8": int8_session}) if real_inputs else None
    aucs = (test or {}).get("auc", {})
    auc_change = None if aucs.get("int8") is None or aucs.get("fp32") is None else aucs["int8"] - aucs["fp32"]
    reasons = []
    if max(parity.values()) > tolerance:
        reasons.append(f"scores differ from PyTorch by {max(parity.values()):.3g} (tolerance {tolerance:g})")
    if auc_change is None:
        reasons.append("no test split to measure the AUC on")
    elif abs(auc_change) > INT8_AUC_BOUND:
        reasons.append(f"test AUC changes by {auc_change:+.5f} (bound {INT8_AUC_BOUND})")
    return {"file": INT8_GRAPH, "type": "int8-dynamic", "ops": ["MatMul", "Gemm"], "tolerance": tolerance,
            "max_abs_diff": parity, "test": test, "auc_change": auc_change, "auc_bound": INT8_AUC_BOUND,
            "passed": not reasons, "why_not": "; ".join(reasons) or None}


def export_run(run_dir: Path, out_root: Path, name: str | None = None, version: str | None = None,
               opset: int = 18, tolerance: float = DEFAULT_TOLERANCE, real_inputs: bool = True,
               quantize: str | None = None, quantized_tolerance: float = INT8_TOLERANCE) -> Path:
    """Writes the fp32 graph (`model.onnx`, refused unless within `tolerance` of PyTorch) and, with
    `quantize="int8"`, a dynamically quantised one beside it (`model.int8.onnx`). The int8 graph never
    refuses the export: meta.json's `precisions.int8` records its parity, its test AUC against fp32's
    and whether both held (`passed`: within `quantized_tolerance` and `INT8_AUC_BOUND`), which is what
    lets the service serve it by default on CPU."""
    if quantize not in (None, "int8"):
        raise ExportError(f"unknown quantisation {quantize!r}; supported: int8")
    import onnxruntime as ort

    run_dir, out_root = Path(run_dir), Path(out_root)
    run = load_run(run_dir)
    name = name or run.model_name
    model_root = out_root / name
    model_root.mkdir(parents=True, exist_ok=True)
    version = version or next_version(model_root)
    final_dir = model_root / version
    if final_dir.exists():
        raise ExportError(f"{final_dir} already exists; versions are immutable")

    module = ScoringModule(run.model).eval()
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=model_root))
    try:
        export_onnx(module, run.schema, staging / "model.onnx", opset)
        session = ort.InferenceSession(str(staging / "model.onnx"), providers=["CPUExecutionProvider"])
        cases = parity_cases(run, real_test_batch(run) if real_inputs else None)
        parity = check_parity(session, module, cases, tolerance)
        precisions = {"fp32": {"file": FP32_GRAPH, "passed": True, "max_abs_diff": parity}}
        if quantize == "int8":
            quantize_int8(staging / FP32_GRAPH, staging / INT8_GRAPH)
            int8_session = ort.InferenceSession(str(staging / INT8_GRAPH), providers=["CPUExecutionProvider"])
            precisions["int8"] = int8_checks(run, module, cases, session, int8_session, quantized_tolerance,
                                             real_inputs)
        shutil.copytree(run_dir / "vocab", staging / "vocab")
        item_table = _item_feature_lookup(run_dir / "item_features.parquet", run.schema)
        (staging / "item_features.json").write_text(json.dumps(item_table))
        if run.schema.item_numeric:
            numeric_table = _item_numeric_lookup(run_dir / "item_features.parquet", run.schema)
            (staging / ITEM_NUMERIC_TABLE).write_text(json.dumps(numeric_table, allow_nan=False))
        (staging / "source").mkdir()
        shutil.copy2(run_dir / "checkpoint.pt", staging / "source" / "checkpoint.pt")
        metrics_path = run_dir / "metrics.json"
        meta = {
            "format": ARTIFACT_FORMAT,
            "name": name,
            "version": version,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "architecture": run.model_name,
            "model_config": dataclasses.asdict(run.model.config),
            "schema": run.schema.to_dict(),
            "scenarios": run.schema.scenarios,
            "max_history_length": run.schema.history_length,
            "index": {"padding": PAD_INDEX, "oov": OOV_INDEX, "first_known": FIRST_KNOWN_INDEX},
            "vocabularies": {p.stem: f"vocab/{p.name}" for p in sorted((staging / "vocab").glob("*.json"))},
            "item_features": "item_features.json",
            **({"item_numeric": ITEM_NUMERIC_TABLE} if run.schema.item_numeric else {}),
            "inputs": input_specs([f.name for f in run.schema.request_features],
                                  [f.name for f in run.schema.item_features],
                                  [f.name for f in run.schema.request_numeric],
                                  [f.name for f in run.schema.item_numeric]),
            "outputs": output_specs(),
            "opset": opset,
            "parity": {"tolerance": tolerance, "max_abs_diff": parity},
            "precisions": precisions,
            "test_metrics": json.loads(metrics_path.read_text()) if metrics_path.exists() else None,
            "source_run": str(run_dir.resolve()),
            "source_checkpoint": "source/checkpoint.pt",
            "torch_version": torch.__version__,
            "onnxruntime_version": ort.__version__,
        }
        (staging / "meta.json").write_text(json.dumps(meta, indent=2))
        os.replace(staging, final_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final_dir


def _item_feature_lookup(path: Path, schema: FeatureSchema) -> dict[str, list[str]]:
    if not schema.item_features or not path.exists():
        return {}
    import pandas as pd

    table = pd.read_parquet(path)
    names = [f.name for f in schema.item_features]
    return dict(zip(table["item_id"].astype(str), table[names].astype(str).values.tolist()))


def _item_numeric_lookup(path: Path, schema: FeatureSchema) -> dict[str, list[float | None]]:
    """Raw item id -> raw item-side numeric values (None where missing); the service transforms them."""
    import pandas as pd

    table = pd.read_parquet(path)
    values = table[[f.name for f in schema.item_numeric]].to_numpy(dtype=np.float64)
    rows = [[float(v) if np.isfinite(v) else None for v in row] for row in values]
    return dict(zip(table["item_id"].astype(str), rows))
