"""The model's arithmetic, counted from its ONNX graph, and the core's peak it is held against.

Counting: the graph's inputs are given concrete shapes (R requests, C candidates, N behaviours),
onnx's shape inference (with data propagation, so Reshape targets computed from Shape ops resolve)
gives every intermediate shape, and each node that does multiply-adds is counted:

- MatMul and its quantised / fused forms (MatMulInteger, QLinearMatMul, DynamicQuantizeMatMul,
  MatMulIntegerToFloat, FusedMatMul, MatMulNBits): output elements x K (numpy broadcasting, so
  batched matmuls count every batch);
- Gemm / QGemm: M x N x K;  Einsum: the product of every index's size (the naive loop nest);
- Conv / ConvInteger / QLinearConv: output elements x (input channels / group) x kernel size.

One multiply-add (MAC) is 2 FLOPs. Each count is labelled by the arithmetic it runs in: `int8` for the
integer ops, `int4` for MatMulNBits, else the element type of its first input (fp32, fp16, bf16).
Element-wise ops (the gates' Mul, Sigmoid, Add, ...) are reported apart, as output elements, and are
not in the FLOPs: they are memory-bound and small next to the matmuls. A counted op whose shapes do
not resolve is listed in `unresolved`, never silently zero.

Candidate-dependent and per-request parts are separated by counting at two C values: the
difference is linear in C, so per candidate = (F(C2) - F(C1)) / (R (C2 - C1)) and the rest
(the history: SIE, STM, TIF's keys and values) is per request.

The peak (`cpu_peak`): fp32 FMA peak of one core = lanes x 2 (an FMA is two FLOPs) x FMA pipes x GHz,
with lanes from /proc/cpuinfo's flags (avx512f: 16 fp32 lanes, avx2 + fma: 8, else sse: 4), FMA
pipes assumed 2 (Intel client and Xeon cores since Haswell, AMD Zen 2/3/4; one-FMA-port parts such as
some Xeon Bronze/Silver AVX-512 SKUs have 1: set SAINET_FMA_UNITS), and the clock from lscpu's max MHz
when the kernel reports one, else /proc/cpuinfo's "cpu MHz" (on VMs often the base clock, below
what the core boosts to: then a measured fraction can exceed what the nominal figure allows; set
SAINET_CPU_GHZ). The int8 figure is nominal and says its assumption.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
from collections import Counter
from pathlib import Path

MATMUL_OPS = {"MatMul", "MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
              "FusedMatMul", "MatMulNBits"}
GEMM_OPS = {"Gemm", "QGemm"}
CONV_OPS = {"Conv", "ConvInteger", "QLinearConv"}
INT8_OPS = {"MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QGemm",
            "ConvInteger", "QLinearConv"}
# Heavy ops this module does not know how to count: reported as unresolved when present.
UNCOUNTED_HEAVY = {"Attention", "MultiHeadAttention", "QAttention", "GroupQueryAttention", "LSTM", "GRU", "RNN",
                   "ConvTranspose"}
ELEMENTWISE_OPS = {"Add", "Sub", "Mul", "Div", "Sigmoid", "Relu", "Tanh", "Exp", "Softmax", "Where", "Erf",
                   "Gelu", "Pow", "Sqrt", "Neg", "Max", "Min", "LayerNormalization"}
# Which input holds B (the weight) for ops that put scales and zero points between A and B.
B_INPUT = {"QLinearMatMul": 3, "QGemm": 3, "QLinearConv": 3}

# Graph inputs of the artifact contract: the role of each axis (None keeps the graph's own size).
CONTRACT_AXES = {"hist_items": ("batch", "history"), "hist_scenarios": ("batch", "history"),
                 "target_scenario": ("batch",), "request_features": ("batch", None),
                 "cand_items": ("batch", "candidates"), "cand_features": ("batch", "candidates", None),
                 "request_numeric": ("batch", None), "cand_numeric": ("batch", "candidates", None)}

ELEMENT_TYPES = {1: "fp32", 10: "fp16", 16: "bf16", 11: "fp64", 3: "int8", 2: "int8"}


def _load(model):
    import onnx

    if isinstance(model, (str, Path)):
        return onnx.load(str(model))
    return model


def contract_shapes(model, requests: int, candidates: int, history: int) -> dict[str, list[int]]:
    """Concrete input shapes for a graph of the artifact contract (R requests, C candidates, N)."""
    sizes = {"batch": requests, "candidates": candidates, "history": history}
    shapes = {}
    for value in _load(model).graph.input:
        dims = value.type.tensor_type.shape.dim
        roles = CONTRACT_AXES.get(value.name, ())
        shape = []
        for axis, dim in enumerate(dims):
            role = roles[axis] if axis < len(roles) else None
            if role is None and dim.dim_param in sizes:
                role = dim.dim_param
            shape.append(sizes[role] if role else dim.dim_value)
        shapes[value.name] = shape
    return shapes


def _with_shapes(model, input_shapes: dict[str, list[int]]):
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())   # a copy: the caller's graph stays
    for value in model.graph.input:
        if value.name in input_shapes:
            dims = value.type.tensor_type.shape.dim
            wanted = input_shapes[value.name]
            if len(dims) != len(wanted):
                raise ValueError(f"input {value.name!r} has rank {len(dims)}, given shape {wanted}")
            for dim, size in zip(dims, wanted):
                dim.Clear()
                dim.dim_value = int(size)
    return model


def _shape_table(model) -> tuple[dict[str, list[int] | None], dict[str, int]]:
    """name -> shape (None where any dim is unknown), and name -> element type."""
    shapes: dict[str, list[int] | None] = {}
    types: dict[str, int] = {}
    graph = model.graph
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor = value.type.tensor_type
        types[value.name] = tensor.elem_type
        if not tensor.HasField("shape"):
            shapes[value.name] = None
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        shapes[value.name] = None if any(d is None for d in dims) else dims
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
        types[init.name] = init.data_type
    for node in graph.node:      # Constant nodes carry their tensors as attributes
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    shapes[node.output[0]] = list(attr.t.dims)
                    types[node.output[0]] = attr.t.data_type
    return shapes, types


def _broadcast(a: list[int], b: list[int]) -> list[int]:
    out = []
    for x, y in zip([1] * (len(b) - len(a)) + a, [1] * (len(a) - len(b)) + b):
        out.append(max(x, y) if 1 in (x, y) else x)
    return out


def _attr(node, name: str, default=None):
    for attr in node.attribute:
        if attr.name == name:
            import onnx

            return onnx.helper.get_attribute_value(attr)
    return default


def _matmul_macs(node, shapes) -> int | None:
    a = shapes.get(node.input[0])
    b_name = node.input[B_INPUT.get(node.op_type, 1)]
    b = shapes.get(b_name)
    if a is None:
        return None
    trans_a = _attr(node, "transA", 0) if node.op_type == "FusedMatMul" else 0
    trans_b = _attr(node, "transB", 0) if node.op_type == "FusedMatMul" else 0
    if len(a) == 1:
        a = [1, a[0]]
    k = a[-2] if trans_a else a[-1]
    m = a[-1] if trans_a else a[-2]
    if node.op_type == "MatMulNBits":   # B is packed: its logical shape is in the attributes
        n = _attr(node, "N")
        k = _attr(node, "K", k)
        batch = a[:-2]
    else:
        if b is None:
            return None
        if len(b) == 1:
            b = [b[0], 1]
        n = b[-2] if trans_b else b[-1]
        batch = _broadcast(a[:-2], b[:-2])
    return math.prod(batch) * m * n * k


def _gemm_macs(node, shapes) -> int | None:
    a, b = shapes.get(node.input[0]), shapes.get(node.input[B_INPUT.get(node.op_type, 1)])
    if a is None or b is None:
        return None
    m, k = (a[1], a[0]) if _attr(node, "transA", 0) else (a[0], a[1])
    n = b[0] if _attr(node, "transB", 0) else b[1]
    return m * n * k


def _einsum_macs(node, shapes) -> int | None:
    equation = _attr(node, "equation")
    equation = equation.decode() if isinstance(equation, bytes) else equation
    operands = equation.replace(" ", "").split("->")[0].split(",")
    sizes: dict[str, int] = {}
    for term, name in zip(operands, node.input):
        shape = shapes.get(name)
        if shape is None or "." in term:
            return None
        for letter, size in zip(term, shape):
            sizes[letter] = max(sizes.get(letter, 1), size)
    return math.prod(sizes.values()) * max(len(operands) - 1, 1)


def _conv_macs(node, shapes) -> int | None:
    w, out = shapes.get(node.input[B_INPUT.get(node.op_type, 1)]), shapes.get(node.output[0])
    if w is None or out is None:
        return None
    return math.prod(out) * math.prod(w[1:])


def _kind(node, types) -> str:
    if node.op_type in INT8_OPS:
        return "int8"
    if node.op_type == "MatMulNBits":
        return "int4"
    return ELEMENT_TYPES.get(types.get(node.input[0]), "fp32")


def count_graph(model, input_shapes: dict[str, list[int]]) -> dict:
    """Multiply-adds of one run of `model` (a path or a ModelProto) with those input shapes:
    {"macs", "flops", "by_kind": {kind: macs}, "by_op": {op_type: macs}, "elementwise_outputs",
    "nodes": [{name, op_type, kind, macs}], "unresolved": [node names]}."""
    from onnx import shape_inference

    model = _with_shapes(_load(model), input_shapes)
    inferred = shape_inference.infer_shapes(model, data_prop=True, strict_mode=False)
    shapes, types = _shape_table(inferred)
    by_kind: Counter = Counter()
    by_op: Counter = Counter()
    nodes, unresolved = [], []
    elementwise = 0
    for node in inferred.graph.node:
        op = node.op_type
        if op in MATMUL_OPS:
            macs = _matmul_macs(node, shapes)
        elif op in GEMM_OPS:
            macs = _gemm_macs(node, shapes)
        elif op == "Einsum":
            macs = _einsum_macs(node, shapes)
        elif op in CONV_OPS:
            macs = _conv_macs(node, shapes)
        elif op in UNCOUNTED_HEAVY:
            unresolved.append(f"{node.name or op} ({op}: not counted)")
            continue
        else:
            if op in ELEMENTWISE_OPS and shapes.get(node.output[0]) is not None:
                elementwise += math.prod(shapes[node.output[0]])
            continue
        if macs is None:
            unresolved.append(f"{node.name or op} ({op}: shapes unknown)")
            continue
        kind = _kind(node, types)
        by_kind[kind] += macs
        by_op[op] += macs
        nodes.append({"name": node.name, "op_type": op, "kind": kind, "macs": macs})
    total = sum(by_kind.values())
    return {"input_shapes": input_shapes, "macs": total, "flops": 2 * total, "by_kind": dict(by_kind),
            "by_op": dict(by_op), "elementwise_outputs": elementwise, "nodes": nodes, "unresolved": unresolved}


def model_flops(path, requests: int, candidates: int, history: int, candidates_alt: int | None = None) -> dict:
    """FLOPs of an artifact graph at (R, C, N), split into the candidate-dependent part (per candidate)
    and the per-request part (the history), by counting again at `candidates_alt` (default 2 C)."""
    model = _load(path)
    alt = candidates_alt or 2 * candidates
    if alt == candidates:
        raise ValueError("candidates_alt must differ from candidates")
    at_c = count_graph(model, contract_shapes(model, requests, candidates, history))
    at_alt = count_graph(model, contract_shapes(model, requests, alt, history))

    def split(key_a, key_b) -> tuple[float, float]:
        per_candidate = (key_b - key_a) / (requests * (alt - candidates))
        return per_candidate, key_a / requests - per_candidate * candidates

    per_candidate_macs, per_request_macs = split(at_c["macs"], at_alt["macs"])
    kinds = sorted(set(at_c["by_kind"]) | set(at_alt["by_kind"]))
    by_kind = {}
    for kind in kinds:
        pc, pr = split(at_c["by_kind"].get(kind, 0), at_alt["by_kind"].get(kind, 0))
        by_kind[kind] = {"macs_per_candidate": pc, "macs_per_request_fixed": pr,
                         "macs_per_request": at_c["by_kind"].get(kind, 0) / requests}
    return {"graph": str(path) if isinstance(path, (str, Path)) else None, "requests": requests,
            "candidates": candidates, "candidates_alt": alt, "history": history,
            "macs_per_candidate": per_candidate_macs, "flops_per_candidate": 2 * per_candidate_macs,
            "macs_per_request_fixed": per_request_macs, "flops_per_request_fixed": 2 * per_request_macs,
            "macs_per_request": at_c["macs"] / requests, "flops_per_request": at_c["flops"] / requests,
            "by_kind": by_kind, "by_op": at_c["by_op"],
            "elementwise_outputs_per_request": at_c["elementwise_outputs"] / requests,
            "unresolved": sorted(set(at_c["unresolved"]) | set(at_alt["unresolved"]))}


# --- the core's peak -------------------------------------------------------------------------------

DEFAULT_FMA_UNITS = 2


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                if fields:
                    break
                continue
            name, _, value = line.partition(":")
            fields.setdefault(name.strip(), value.strip())
    except OSError:
        pass
    return fields


def _lscpu_max_mhz() -> float | None:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"^CPU max MHz:\s*([\d.]+)", text, re.MULTILINE)
    return float(match.group(1)) if match and float(match.group(1)) > 0 else None


def cpu_peak(fma_units: int | None = None, ghz: float | None = None, cpuinfo: dict[str, str] | None = None,
             max_mhz: float | None = None) -> dict:
    """One core's nominal fp32 FMA peak (GFLOP/s) and how it was derived. `fma_units` and `ghz`
    override the assumption and the clock (also SAINET_FMA_UNITS, SAINET_CPU_GHZ)."""
    info = _cpuinfo() if cpuinfo is None else cpuinfo
    flags = set(info.get("flags", "").split())
    if "avx512f" in flags:
        isa, lanes = "avx512f", 16
    elif "avx2" in flags and "fma" in flags:
        isa, lanes = "avx2+fma", 8
    elif "avx" in flags:
        isa, lanes = "avx (no fma)", 8
    else:
        isa, lanes = "sse", 4
    has_fma = "fma" in flags or "avx512f" in flags
    units_source = "argument"
    if fma_units is None and os.environ.get("SAINET_FMA_UNITS"):
        fma_units, units_source = int(os.environ["SAINET_FMA_UNITS"]), "SAINET_FMA_UNITS"
    if fma_units is None:
        fma_units, units_source = DEFAULT_FMA_UNITS, "assumed (Intel Haswell+ and AMD Zen 2/3/4 cores have 2)"
    clock_source = "argument"
    if ghz is None and os.environ.get("SAINET_CPU_GHZ"):
        ghz, clock_source = float(os.environ["SAINET_CPU_GHZ"]), "SAINET_CPU_GHZ"
    if ghz is None:
        max_mhz = _lscpu_max_mhz() if max_mhz is None and cpuinfo is None else max_mhz
        if max_mhz:
            ghz, clock_source = max_mhz / 1000, "lscpu CPU max MHz"
        elif info.get("cpu MHz"):
            ghz, clock_source = float(info["cpu MHz"]) / 1000, "/proc/cpuinfo cpu MHz (may be the base clock)"
        else:
            ghz, clock_source = float("nan"), "unknown"
    # Without FMA a multiply and an add issue separately: still 2 FLOPs per lane per cycle per pipe pair.
    flops_per_cycle = lanes * 2 * fma_units
    peak = flops_per_cycle * ghz
    vnni = bool(flags & {"avx512_vnni", "avx_vnni"})
    # int8 (u8 x s8 -> s32 dot products): 4 int8 lanes per fp32 lane. With VNNI one vpdpbusd per 4-wide
    # group; without it (AVX2) vpmaddubsw + vpmaddwd, two multiply-pipe instructions for the same work.
    int8_macs_per_cycle = lanes * 4 * fma_units // (1 if vnni else 2)
    int8_peak_gops = 2 * int8_macs_per_cycle * ghz
    derivation = (f"{lanes} fp32 lanes ({isa}, /proc/cpuinfo flags) x 2 FLOPs per FMA x {fma_units} FMA pipes "
                  f"({units_source}) x {ghz:.3g} GHz ({clock_source}) = {peak:.1f} GFLOP/s per core")
    int8_derivation = (f"nominal: {lanes * 4} int8 lanes x {fma_units} pipes / "
                       f"{'1 instruction (VNNI vpdpbusd)' if vnni else '2 instructions (vpmaddubsw + vpmaddwd, no VNNI)'}"
                       f" = {int8_macs_per_cycle} MACs/cycle = {int8_peak_gops:.1f} G int8 ops/s "
                       f"({int8_peak_gops / peak:.1f}x the fp32 peak); an assumption about the kernel, not measured")
    return {"model_name": info.get("model name", ""), "isa": isa, "fp32_lanes": lanes, "fma": has_fma,
            "fma_units": fma_units, "fma_units_source": units_source, "ghz": ghz, "clock_source": clock_source,
            "fp32_flops_per_cycle": flops_per_cycle, "fp32_peak_gflops": peak, "derivation": derivation,
            "vnni": vnni, "avx512_bf16": "avx512_bf16" in flags, "amx": bool(flags & {"amx_bf16", "amx_tile"}),
            "int8_macs_per_cycle": int8_macs_per_cycle, "int8_peak_gops": int8_peak_gops,
            "int8_derivation": int8_derivation}
