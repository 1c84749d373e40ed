"""FLOPs counted from ONNX graphs (`sainet.bench.flops`): a hand-built graph with a known answer, and
an exported tiny SAINet against the analytic count docs/performance.md gives (the SDT tower's gate
projection (input width + d) x input width and its linear layer per layer, TIF per candidate)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from sainet.bench.flops import contract_shapes, count_graph, cpu_peak, model_flops  # noqa: E402


def sdt_tower_macs(input_dim: int, d: int, widths: tuple[int, ...]) -> int:
    """docs/performance.md: each layer a gate projection (input width + d -> input width) and a
    linear layer, then the logit."""
    macs = 0
    for width in widths:
        macs += (input_dim + d) * input_dim + input_dim * width
        input_dim = width
    return macs + input_dim


def test_the_default_tower_costs_what_the_docs_say():
    assert sdt_tower_macs(64, 32, (512, 256, 128, 64)) == 583_744


def _tiny_graph():
    """x [B, 3, 4] -> MatMul W [4, 5] -> Reshape to [B*3, 5] (target computed from Shape: needs data
    propagation) -> Gemm with W2^T [6, 5] -> Relu; an Einsum and a MatMulInteger beside it."""
    w = numpy_helper.from_array(np.ones((4, 5), np.float32), "W")
    w2 = numpy_helper.from_array(np.ones((6, 5), np.float32), "W2")
    wq = numpy_helper.from_array(np.ones((4, 7), np.int8), "Wq")
    minus_one = numpy_helper.from_array(np.array([-1], np.int64), "minus_one")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),                       # B*3*5*4
        helper.make_node("Shape", ["h"], ["h_shape"]),
        helper.make_node("Slice", ["h_shape", "minus_one", "big"], ["last"]),
        helper.make_node("Concat", ["minus_one", "last"], ["target"], axis=0),
        helper.make_node("Reshape", ["h", "target"], ["flat"]),
        helper.make_node("Gemm", ["flat", "W2"], ["g"], name="gemm", transB=1),       # (B*3)*6*5
        helper.make_node("Relu", ["g"], ["out"]),
        helper.make_node("Einsum", ["x", "y"], ["e"], name="einsum", equation="bij,bjk->bik"),  # B*3*4*2
        helper.make_node("MatMulInteger", ["xq", "Wq"], ["q"], name="mmi"),              # 3*7*4
    ]
    big = numpy_helper.from_array(np.array([2 ** 62], np.int64), "big")
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 4]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 2]),
         helper.make_tensor_value_info("xq", TensorProto.UINT8, [3, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("e", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("q", TensorProto.INT32, None)],
        [w, w2, wq, minus_one, big])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


@pytest.mark.parametrize("batch", [1, 5])
def test_a_hand_built_graph_has_its_known_count(batch):
    model = _tiny_graph()
    result = count_graph(model, {"x": [batch, 3, 4], "y": [batch, 4, 2], "xq": [3, 4]})
    by_node = {n["name"]: n["macs"] for n in result["nodes"]}
    assert by_node == {"mm": batch * 3 * 5 * 4, "gemm": batch * 3 * 6 * 5, "einsum": batch * 3 * 4 * 2,
                       "mmi": 3 * 7 * 4}
    assert result["by_kind"] == {"fp32": batch * (60 + 90 + 24), "int8": 84}
    assert result["flops"] == 2 * result["macs"] and not result["unresolved"]
    assert result["elementwise_outputs"] == batch * 3 * 6        # the Relu, not in the FLOPs
    # The caller's graph keeps its symbolic batch dimension.
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_an_op_it_cannot_shape_is_reported_not_counted_as_zero():
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                               helper.make_tensor_value_info("w", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    result = count_graph(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), {})
    assert result["macs"] == 0 and result["unresolved"] == ["mm (MatMul: shapes unknown)"]


HISTORY, D, TOWER = 8, 8, (16, 8)


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    from export.onnx_export import export_run
    from model.data.datasets import DataOptions, prepare_dataset
    from model.data.synthetic import SyntheticConfig
    from model.train import TrainConfig, train_model
    from sainet.bench.runner import resolve_artifact_dir

    root = tmp_path_factory.mktemp("flops")
    options = DataOptions(history_length=HISTORY, synthetic=SyntheticConfig(users=80, items=40, events_per_user=8))
    train_model(prepare_dataset(options), "sainet", {"embed_dim": D, "tower": TOWER},
                TrainConfig(epochs=1, batch_size=512, threads=1), root / "run", options)
    export_run(root / "run", root / "models", real_inputs=False, quantize="int8")
    return resolve_artifact_dir(root / "models")


def test_an_exported_model_counts_as_the_analytic_formula(tiny_artifact):
    import json

    meta = json.loads((tiny_artifact / "meta.json").read_text())
    config = meta["model_config"]
    assert config["embed_dim"] == D and tuple(config["tower"]) == TOWER and config["sdt"]
    shapes = contract_shapes(onnx.load(str(tiny_artifact / "model.onnx")), 3, 7, HISTORY)
    request_width, item_width = shapes["request_features"][1], shapes["cand_features"][2]
    # Eq. 9's tower input [V_t, e_item, e_o]: 2 d plus one embedding per other feature.
    tower = sdt_tower_macs(2 * D + D * (request_width + item_width), D, TOWER)
    tif_per_candidate = 2 * D * D + 2 * HISTORY * D          # query projection, q.k over N, softmax . V
    blocks = config["blocks"]
    per_block = HISTORY * (2 * D * 3 * D + D * D + 2 * D * D) + 2 * HISTORY * HISTORY * D  # SIE QKV x2, out, STM; QK, AV
    history = blocks * per_block + 2 * HISTORY * D * D       # + TIF keys and values, once per request

    fp32 = model_flops(tiny_artifact / "model.onnx", requests=3, candidates=7, history=HISTORY)
    assert not fp32["unresolved"]
    assert fp32["macs_per_candidate"] == tower + tif_per_candidate
    assert fp32["macs_per_request_fixed"] == history
    assert fp32["flops_per_request"] == 2 * (history + 7 * (tower + tif_per_candidate))

    int8 = model_flops(tiny_artifact / "model.int8.onnx", requests=3, candidates=7, history=HISTORY)
    assert int8["macs_per_candidate"] == fp32["macs_per_candidate"]      # the same arithmetic, in int8
    # The weight matmuls go int8; the two activation x activation matmuls of TIF stay fp32.
    assert int8["by_kind"]["int8"]["macs_per_candidate"] == tower + 2 * D * D
    assert int8["by_kind"]["fp32"]["macs_per_candidate"] == 2 * HISTORY * D


CPUINFO_AVX512 = {"model name": "Intel(R) Xeon(R)", "flags": "fpu sse avx avx2 fma avx512f avx512_vnni",
                  "cpu MHz": "2000.000"}
CPUINFO_ZEN3 = {"model name": "AMD EPYC 7763", "flags": "fpu sse avx avx2 fma", "cpu MHz": "2445.404"}


def test_the_peak_follows_the_vector_width_the_pipes_and_the_clock(monkeypatch):
    monkeypatch.delenv("SAINET_FMA_UNITS", raising=False)
    monkeypatch.delenv("SAINET_CPU_GHZ", raising=False)
    zen3 = cpu_peak(cpuinfo=CPUINFO_ZEN3)
    assert zen3["fp32_lanes"] == 8 and zen3["fma_units"] == 2
    assert zen3["fp32_peak_gflops"] == pytest.approx(8 * 2 * 2 * 2.445404)
    assert "cpu MHz" in zen3["clock_source"] and "78.3 GFLOP/s" in zen3["derivation"]
    assert zen3["int8_peak_gops"] == pytest.approx(2 * zen3["fp32_peak_gflops"])   # AVX2, no VNNI
    xeon = cpu_peak(cpuinfo=CPUINFO_AVX512, max_mhz=3500.0)
    assert xeon["fp32_peak_gflops"] == pytest.approx(16 * 2 * 2 * 3.5) and xeon["clock_source"] == "lscpu CPU max MHz"
    assert xeon["int8_peak_gops"] == pytest.approx(4 * xeon["fp32_peak_gflops"]) and xeon["vnni"]
    monkeypatch.setenv("SAINET_FMA_UNITS", "1")
    monkeypatch.setenv("SAINET_CPU_GHZ", "3.0")
    one_pipe = cpu_peak(cpuinfo=CPUINFO_AVX512)
    assert one_pipe["fp32_peak_gflops"] == pytest.approx(16 * 2 * 1 * 3.0)
    assert one_pipe["fma_units_source"] == "SAINET_FMA_UNITS" and one_pipe["clock_source"] == "SAINET_CPU_GHZ"
    assert cpu_peak(fma_units=2, ghz=1.0, cpuinfo=CPUINFO_ZEN3)["fp32_peak_gflops"] == 32.0
