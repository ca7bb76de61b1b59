"""Engines of the race: one small adapter per runtime, all with the same three methods.

    engine.prepare()                       build/compile/quantize; raise Skip(reason) if it cannot
    engine.set_threads(n)                  n intra-op threads, 1 inter-op thread, sequential
    engine.run(input_ids, attention_mask)  int64 [B, T] x2 -> last_hidden_state float32 [B, T, D]

Every engine reads the same Hugging Face directory, so all of them carry the same weights: torch
loads it; ONNX Runtime and OpenVINO run one ONNX export of that torch module (dynamic B and T);
the INT8 variants are calibrated on the same real sentences (``Workload.calibration``). Heavy
packages are imported inside the methods, so a missing package only skips its engines.

INT8 schemes (what "int8" means per engine):
  pytorch-int8-dynamic  nn.Linear weights s8 per tensor, activations u8 quantized per call (dynamic)
  onnxruntime-int8      static QDQ: activations u8 per-tensor asymmetric, weights s8 per channel
                        symmetric, MatMuls with a constant weight only (the Linear layers)
  openvino-int8         NNCF post-training quantization, ModelType.TRANSFORMER, default preset
  fdbert-native-int8    the fdbert INT8 contract (static u8 activations, s8 per-channel weights)
  deepsparse-int8-sparse  the onnxruntime-int8 scheme on the pruned export (opset 14), run by
                        DeepSparse 1.8.0 in .venv-deepsparse (RemoteEngine, worker.py)

Weights: every engine runs the workload's model unless its ``weights`` says otherwise; the
``*-sparse`` engines of fdbert and DeepSparse run one set of 80 % 1x4 pruned weights
(``fdbert.prune``, copied into the torch model for the ONNX export: ``pruned_torch_model``).
"""

from __future__ import annotations

import copy
import importlib
import importlib.metadata
import importlib.util
import os
from pathlib import Path

import numpy as np

from .timing import time_calls
from .workload import Workload


class Skip(Exception):
    """The engine cannot run on this machine; ``str(exc)`` is the reason printed to the user."""


def package_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


class Engine:
    """Base adapter. ``requires`` lists (import name, pip distribution) pairs."""

    name = ""
    precision = "fp32"
    weights = "as given"  # which model it runs: the workload's, or e.g. a pruned one (flagged)
    info: dict = {}  # what the engine reports about itself (RemoteEngine: the worker's prepare)
    requires: tuple[tuple[str, str], ...] = ()

    def __init__(self, workload: Workload, work_dir: Path):
        self.workload = workload
        self.work_dir = Path(work_dir)

    def check_requirements(self) -> None:
        for module, dist in self.requires:
            if importlib.util.find_spec(module) is None:
                raise Skip(f"package {dist!r} is not installed (pip install {dist})")

    def prepare(self) -> None:
        raise NotImplementedError

    def set_threads(self, n: int) -> None:
        raise NotImplementedError

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def versions(self) -> dict[str, str | None]:
        return {dist: package_version(dist) for _, dist in self.requires}

    def time(self, input_ids: np.ndarray, attention_mask: np.ndarray, budget_s: float,
             min_reps: int) -> list[float]:
        """Seconds of repeated ``run`` calls, by :func:`fdbert.bench.timing.time_calls`."""
        return time_calls(lambda: self.run(input_ids, attention_mask), budget_s, min_reps)

    def close(self) -> None:
        """Release what ``prepare`` started (a subprocess); the race calls it at the end."""


# ---- shared artifacts: one torch module, one ONNX export per (workload, work_dir) ----------------

_TORCH_MODELS: dict[tuple[str, str], object] = {}


def load_torch_model(model_dir: Path, attn_implementation: str = "sdpa"):
    """transformers.AutoModel in eval mode, cached per directory and attention implementation."""
    key = (str(model_dir), attn_implementation)
    if key not in _TORCH_MODELS:
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        model = AutoModel.from_pretrained(model_dir, attn_implementation=attn_implementation)
        _TORCH_MODELS[key] = model.eval()
    return _TORCH_MODELS[key]


def _last_hidden_state_module(model):
    import torch

    class LastHiddenState(torch.nn.Module):
        """(input_ids, attention_mask) -> last_hidden_state: the graph every export runs."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    return LastHiddenState(model).eval()


def export_onnx(workload: Workload, work_dir: Path, model=None, name: str = "model-fp32",
                opset: int = 17) -> Path:
    """``torch.onnx.export`` of the model (or of ``model``, a transformers module) with dynamic
    batch and sequence axes, to WORK_DIR/NAME.onnx (once per run)."""
    import torch

    path = Path(work_dir) / f"{name}.onnx"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    model = load_torch_model(workload.model_dir, "eager") if model is None else model
    module = _last_hidden_state_module(model)
    example = workload.timing_batch(2)
    args = (torch.from_numpy(example.input_ids), torch.from_numpy(example.attention_mask))
    names = ["input_ids", "attention_mask"]
    axes = {"input_ids": {0: "B", 1: "T"}, "attention_mask": {0: "B", 1: "T"},
            "last_hidden_state": {0: "B", 1: "T"}}
    with torch.inference_mode():
        torch.onnx.export(
            module, args, str(path), input_names=names, output_names=["last_hidden_state"],
            dynamic_axes=axes, opset_version=opset, dynamo=False, do_constant_folding=True,
        )
    return path


def _feeds(batch) -> dict[str, np.ndarray]:
    return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}


# ---- PyTorch ---------------------------------------------------------------------------------


class PyTorchFP32(Engine):
    name = "pytorch-fp32"
    requires = (("torch", "torch"), ("transformers", "transformers"))

    def prepare(self) -> None:
        self.model = load_torch_model(self.workload.model_dir)

    def set_threads(self, n: int) -> None:
        import torch

        torch.set_num_threads(n)
        try:  # allowed once, before any inter-op parallel work
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass

    def run(self, input_ids, attention_mask):
        import torch

        with torch.inference_mode():
            ids, mask = torch.from_numpy(input_ids), torch.from_numpy(attention_mask)
            out = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return out.numpy()


class PyTorchInt8Dynamic(PyTorchFP32):
    name = "pytorch-int8-dynamic"
    precision = "int8"

    def prepare(self) -> None:
        import torch

        fp32 = load_torch_model(self.workload.model_dir)
        self.model = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(fp32), {torch.nn.Linear}, dtype=torch.qint8
        ).eval()


# ---- ONNX Runtime ----------------------------------------------------------------------------


class OnnxRuntimeFP32(Engine):
    name = "onnxruntime-fp32"
    requires = (("torch", "torch"), ("transformers", "transformers"), ("onnx", "onnx"),
                ("onnxruntime", "onnxruntime"))

    def prepare(self) -> None:
        self.path = export_onnx(self.workload, self.work_dir)
        self.sessions: dict[int, object] = {}

    def set_threads(self, n: int) -> None:
        import onnxruntime as ort

        if n not in self.sessions:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = n
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self.sessions[n] = ort.InferenceSession(
                str(self.path), opts, providers=["CPUExecutionProvider"]
            )
        self.session = self.sessions[n]

    def run(self, input_ids, attention_mask):
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        return self.session.run(None, feeds)[0]


class _CalibrationReader:
    """onnxruntime.quantization CalibrationDataReader over the workload's calibration batches."""

    def __init__(self, batches):
        self._it = iter([_feeds(b) for b in batches])

    def get_next(self):
        return next(self._it, None)


def linear_matmul_nodes(model) -> list[str]:
    """Names of MatMul/Gemm nodes whose second input is a constant: the nn.Linear layers."""
    consts = {init.name for init in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    weights = set(consts)
    for node in model.graph.node:  # a transposed constant is still a weight
        if node.op_type == "Transpose" and node.input[0] in consts:
            weights.update(node.output)
    return [n.name for n in model.graph.node
            if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in weights]


def quantize_qdq(fp32: Path, workload: Workload) -> Path:
    """ONNX Runtime static QDQ quantization of the Linear MatMuls: FP32.onnx -> FP32-int8-qdq.onnx.

    Activations u8 per tensor (asymmetric, min-max on the workload's calibration batches), weights
    s8 per output channel (symmetric: a zero weight stays a zero code, so sparsity survives).
    """
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32 = Path(fp32)
    pre = fp32.with_name(fp32.stem + "-preprocessed.onnx")
    path = fp32.with_name(fp32.stem + "-int8-qdq.onnx")
    if not path.is_file():
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        nodes = linear_matmul_nodes(onnx.load(str(pre)))
        if not nodes:
            raise Skip("no MatMul with a constant weight found in the ONNX graph")
        quantize_static(
            str(pre), str(path), _CalibrationReader(workload.calibration),
            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, per_channel=True, reduce_range=False,
            nodes_to_quantize=nodes, calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    return path


class OnnxRuntimeInt8(OnnxRuntimeFP32):
    name = "onnxruntime-int8"
    precision = "int8"

    def prepare(self) -> None:
        self.path = quantize_qdq(export_onnx(self.workload, self.work_dir), self.workload)
        self.sessions = {}


# ---- OpenVINO --------------------------------------------------------------------------------


class OpenVINOFP32(Engine):
    name = "openvino-fp32"
    requires = (("torch", "torch"), ("transformers", "transformers"), ("onnx", "onnx"),
                ("openvino", "openvino"))

    def prepare(self) -> None:
        import openvino as ov

        self.core = ov.Core()
        self.model = self.core.read_model(str(export_onnx(self.workload, self.work_dir)))
        self.compiled: dict[int, object] = {}

    def set_threads(self, n: int) -> None:
        if n not in self.compiled:
            config = {
                "INFERENCE_NUM_THREADS": n,
                "NUM_STREAMS": 1,
                "PERFORMANCE_HINT": "LATENCY",
                # OpenVINO runs bf16 by default on CPUs with AMX / AVX512-BF16: ask for real fp32
                # (int8 layers stay int8; the rest runs fp32 as in every other engine)
                "INFERENCE_PRECISION_HINT": "f32",
            }
            compiled = self.core.compile_model(self.model, "CPU", config)
            self.compiled[n] = compiled.create_infer_request()
        self.request = self.compiled[n]

    def run(self, input_ids, attention_mask):
        self.request.infer({"input_ids": input_ids, "attention_mask": attention_mask})
        return self.request.get_output_tensor(0).data.copy()


class OpenVINOInt8(OpenVINOFP32):
    name = "openvino-int8"
    precision = "int8"
    requires = OpenVINOFP32.requires + (("nncf", "nncf"),)

    def prepare(self) -> None:
        import nncf

        super().prepare()
        data = nncf.Dataset([_feeds(b) for b in self.workload.calibration])
        self.model = nncf.quantize(
            self.model, data, model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(self.workload.calibration),  # one dataset item = one batch
        )


# ---- fdbert ----------------------------------------------------------------------------------


class FdbertEngine(Engine):
    """fdbert on one backend; ``prepare`` skips with the reason when the feature is not there."""

    name = "fdbert-reference"
    backend = "reference"
    requires = (("fdbert", "fdbert"),)

    def _fdbert(self):
        fdbert = importlib.import_module("fdbert")
        for attr in ("from_pretrained", "set_backend"):
            if not hasattr(fdbert, attr):
                raise Skip(f"fdbert.{attr} does not exist yet")
        if hasattr(fdbert, "available_backends"):  # {name: None if it can run, else the reason}
            reason = dict(fdbert.available_backends()).get(self.backend, "unknown backend")
            if reason is not None:
                raise Skip(f"fdbert backend {self.backend!r} is not available: {reason}")
        elif self.backend != "reference":
            raise Skip("fdbert.available_backends does not exist yet")
        return fdbert

    def _compress(self, attr: str):
        """``fdbert.<attr>`` (or ``fdbert.compress.<attr>``); Skip if neither exists yet."""
        fn = getattr(self.fdbert, attr, None)
        if fn is None:
            try:
                fn = getattr(importlib.import_module("fdbert.compress"), attr, None)
            except ImportError:
                fn = None
        if fn is None:
            raise Skip(f"fdbert.{attr} does not exist yet")
        return fn

    def prepare(self) -> None:
        self.fdbert = self._fdbert()
        self.model = self.fdbert.from_pretrained(self.workload.model_dir)

    def set_threads(self, n: int) -> None:
        if hasattr(self.fdbert, "set_num_threads"):
            self.fdbert.set_num_threads(n)
        else:  # the reference runs on NumPy's BLAS: limit its pool when threadpoolctl is there
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:
                return
            self._limits = threadpool_limits(n)

    def run(self, input_ids, attention_mask):
        with self.fdbert.set_backend(self.backend):
            return np.asarray(self.model(input_ids, attention_mask), dtype=np.float32)

    def versions(self):
        return {"fdbert": getattr(importlib.import_module("fdbert"), "__version__", None)
                or package_version("fdbert")}


class FdbertNativeFP32(FdbertEngine):
    name = "fdbert-native-fp32"
    backend = "native"


class FdbertNativeInt8(FdbertEngine):
    """fdbert.quantize: static u8 activations calibrated on the workload's calibration texts."""

    name = "fdbert-native-int8"
    precision = "int8"
    backend = "native"

    def prepare(self) -> None:
        super().prepare()
        quantize = self._compress("quantize")
        self.model = quantize(self.model, self.workload.calibration_texts, progress=False,
                              measure_error=False)


class FdbertNativeInt8Sparse(FdbertNativeInt8):
    """fdbert.prune (``sparsity`` of the (1, 4) blocks zeroed by magnitude), then fdbert.quantize.

    Pruning changes the function (no fine-tuning here): its fidelity column measures that.
    """

    name = "fdbert-native-int8-sparse"
    sparsity = 0.8
    block = (1, 4)
    weights = "pruned 80% 1x4"  # one-shot, no fine-tuning; deepsparse-int8-sparse runs the same

    attention = "fp32"

    def prepare(self) -> None:
        FdbertEngine.prepare(self)
        prune, quantize = self._compress("prune"), self._compress("quantize")
        sparse = prune(self.model, sparsity=self.sparsity, block=self.block)
        self.model = quantize(sparse, self.workload.calibration_texts, progress=False,
                              measure_error=False, attention=self.attention)


class FdbertNativeInt8SparseInt8Attention(FdbertNativeInt8Sparse):
    """The same, with INT8 attention (``quantize(..., attention="int8")``, docs/int8.md)."""

    name = "fdbert-native-int8-sparse-qattn"
    attention = "int8"


class FdbertDistilled(FdbertEngine):
    """A distilled sparse INT8 model shipped with fdbert (fdbert.shipped_models(), docs/accuracy.md).

    Trained from all-MiniLM-L6-v2 by ``fdbert distill``: skipped on any other workload model. Its
    fidelity column is the distilled model's real cosine to the float32 model.
    """

    name = "fdbert-distilled-80"
    precision = "int8"
    weights = "distilled 80% (shipped)"
    backend = "native"
    shipped = "minilm-l6-sparse80-int8"

    def prepare(self) -> None:
        super().prepare()
        models = getattr(self.fdbert, "shipped_models", dict)()
        if self.shipped not in models:
            raise Skip(f"no shipped model {self.shipped!r}")
        distilled = self.fdbert.load_shipped(self.shipped)
        if not np.array_equal(distilled.weights.embeddings.word_embeddings,
                              self.model.weights.embeddings.word_embeddings):
            raise Skip(f"{self.shipped} is distilled from all-MiniLM-L6-v2, not from this workload's model")
        self.model = distilled


class FdbertDistilled50(FdbertDistilled):
    name = "fdbert-distilled-50"
    shipped = "minilm-l6-sparse50-int8"
    weights = "distilled 50% (shipped)"


# ---- engines in another venv, run in a subprocess (fdbert/bench/worker.py) --------------------

WORKER = Path(__file__).resolve().with_name("worker.py")
SOURCE_ROOT = Path(__file__).resolve().parent.parent.parent  # the checkout: .venv-deepsparse is here


class RemoteEngine(Engine):
    """An engine whose package lives in another venv: ``worker.py ADAPTER`` under that venv's
    Python, driven over a pipe. Its timing loop runs there too (``timing.time_calls``)."""

    adapter = "fake"
    python_env = ""  # environment variable that names the interpreter, if set
    default_python = ""  # else this path, relative to the source checkout
    install_hint = ""

    def python(self) -> Path:
        return Path(os.environ.get(self.python_env) or SOURCE_ROOT / self.default_python)

    def check_requirements(self) -> None:
        python = self.python()
        if not python.is_file():
            raise Skip(f"not installed: no {python} ({self.install_hint})")

    def model_path(self) -> str:
        """What the worker loads (an ONNX file); made by ``prepare``."""
        raise NotImplementedError

    def prepare(self) -> None:
        import subprocess

        model = self.model_path()
        self.proc = subprocess.Popen([str(self.python()), str(WORKER), self.adapter],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._versions = self.call({"cmd": "hello"})[0].get("versions", {})
        reply = self.call({"cmd": "prepare", "model": model, "seq_len": self.workload.seq_len})[0]
        self.info = reply.get("info", {})

    def call(self, header: dict, arrays: dict | None = None) -> tuple[dict, dict]:
        """One request, its reply; Skip / RuntimeError with the worker's one-line message."""
        from .worker import receive, send

        try:
            send(self.proc.stdin, header, arrays)
            reply, out = receive(self.proc.stdout)
        except (EOFError, BrokenPipeError) as exc:
            code = self.proc.poll()
            raise RuntimeError(f"the {self.adapter} worker died (exit code {code}): {exc}") from exc
        if "skip" in reply:
            raise Skip(reply["skip"])
        if "error" in reply:
            raise RuntimeError(f"{self.adapter} worker: {reply['error']}")
        return reply, out

    def set_threads(self, n: int) -> None:
        self.call({"cmd": "set_threads", "n": n})

    def run(self, input_ids, attention_mask):
        arrays = {"input_ids": input_ids, "attention_mask": attention_mask}
        return self.call({"cmd": "run"}, arrays)[1]["out"]

    def time(self, input_ids, attention_mask, budget_s, min_reps):
        arrays = {"input_ids": input_ids, "attention_mask": attention_mask}
        header = {"cmd": "time", "budget_s": budget_s, "min_reps": min_reps}
        return self.call(header, arrays)[0]["samples_s"]

    def versions(self):
        return dict(getattr(self, "_versions", {}))

    def close(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is None or proc.poll() is not None:
            return
        try:
            from .worker import send

            send(proc.stdin, {"cmd": "quit"})
            proc.stdin.close()
            proc.wait(timeout=30)
        except Exception:  # noqa: BLE001 - a worker that will not quit is killed
            proc.kill()
            proc.wait()


def pruned_torch_model(workload: Workload, sparsity: float, block: tuple[int, int]):
    """The workload's transformers model with the Linear weights of ``fdbert.prune``: the weights
    fdbert-native-int8-sparse runs, so that a peer can run exactly them.

    Every Linear of the fdbert model is first checked equal to the torch one it replaces.
    """
    import torch

    import fdbert
    from fdbert.loading import LAYER_KEYS, LAYER_PREFIX

    dense = fdbert.from_pretrained(workload.model_dir)
    pruned = fdbert.prune(dense, sparsity=sparsity, block=block)
    model = copy.deepcopy(load_torch_model(workload.model_dir, "eager"))
    kind = model.config.model_type
    if kind not in LAYER_PREFIX:
        raise Skip(f"pruned export knows distilbert and bert, not {kind!r}")
    column = list(LAYER_PREFIX).index(kind)
    state = model.state_dict()
    base = next((p for p in ("", f"{kind}.") if f"{p}{LAYER_PREFIX[kind].format(i=0)}"
                 f"{LAYER_KEYS['q_lin'][column]}.weight" in state), None)
    if base is None:
        raise Skip(f"no {LAYER_KEYS['q_lin'][column]} weight in the torch model")
    for i, (before, after) in enumerate(zip(dense.weights.layers, pruned.weights.layers)):
        for name in before.LINEARS:
            key = f"{base}{LAYER_PREFIX[kind].format(i=i)}{LAYER_KEYS[name][column]}.weight"
            if not np.array_equal(state[key].numpy(), getattr(before, name).weight):
                raise RuntimeError(f"{key}: the torch weight is not fdbert's")
            state[key] = torch.from_numpy(np.ascontiguousarray(getattr(after, name).weight))
    model.load_state_dict(state)
    return model.eval()


DEEPSPARSE_OPSET = 14  # LayerNormalization (opset 17) runs outside DeepSparse 1.8: 90 % vs 98 %


class DeepSparseInt8Sparse(RemoteEngine):
    """DeepSparse 1.8.0 on fdbert-native-int8-sparse's pruned weights: ONNX export (opset 14) of
    the pruned torch model, ONNX Runtime static QDQ quantization (``quantize_qdq``), compiled by
    DeepSparse per (B, T, threads). Runs in .venv-deepsparse (``make bench-deepsparse``). The
    fraction of the graph DeepSparse runs itself (the rest falls back to its bundled ONNX Runtime)
    is in the record's ``info``."""

    name = "deepsparse-int8-sparse"
    precision = "int8"
    sparsity = FdbertNativeInt8Sparse.sparsity
    block = FdbertNativeInt8Sparse.block
    weights = FdbertNativeInt8Sparse.weights
    requires = (("torch", "torch"), ("transformers", "transformers"), ("onnx", "onnx"),
                ("onnxruntime", "onnxruntime"))
    adapter = "deepsparse"
    python_env = "FDBERT_DEEPSPARSE_PYTHON"
    default_python = ".venv-deepsparse/bin/python"
    install_hint = "make bench-deepsparse builds it"

    def check_requirements(self) -> None:
        Engine.check_requirements(self)
        RemoteEngine.check_requirements(self)

    def fp32_onnx(self) -> Path:
        tag = f"model-pruned{round(self.sparsity * 100)}-{self.block[0]}x{self.block[1]}-opset{DEEPSPARSE_OPSET}"
        model = pruned_torch_model(self.workload, self.sparsity, self.block)
        return export_onnx(self.workload, self.work_dir, model, tag, opset=DEEPSPARSE_OPSET)

    def model_path(self) -> str:
        return str(for_old_onnx(quantize_qdq(self.fp32_onnx(), self.workload)))


class DeepSparseFP32Sparse(DeepSparseInt8Sparse):
    """The same pruned weights in float32: DeepSparse's sparse fp32 kernels (on a CPU without
    AVX-512 VNNI its fastest mode: its INT8 is slower there)."""

    name = "deepsparse-fp32-sparse"
    precision = "fp32-sparse"  # not held to the fp32 agreement gate: other weights

    def model_path(self) -> str:
        return str(for_old_onnx(self.fp32_onnx()))


OLD_ONNX_IR_VERSION = 8  # onnx 1.14 (DeepSparse 1.8's) reads IR <= 9; 8 is what opset 17 needs


def for_old_onnx(path: Path) -> Path:
    """A copy of the ONNX file that an older ONNX runtime loads: opset imports of domains no node
    uses are dropped (the exporter stamps ai.onnx.ml 5, unknown to DeepSparse's runtime) and the
    IR version is lowered to ``OLD_ONNX_IR_VERSION``. The graph is unchanged."""
    import onnx

    out = Path(path).with_name(Path(path).stem + "-ir8.onnx")
    if out.is_file():
        return out
    model = onnx.load(str(path))
    used = {node.domain for node in model.graph.node}
    keep = [o for o in model.opset_import if o.domain in used or o.domain in ("", "ai.onnx")]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    model.ir_version = min(model.ir_version, OLD_ONNX_IR_VERSION)
    onnx.save(model, str(out))
    return out


ENGINES: dict[str, type[Engine]] = {
    cls.name: cls
    for cls in (
        PyTorchFP32, PyTorchInt8Dynamic, OnnxRuntimeFP32, OnnxRuntimeInt8, OpenVINOFP32,
        OpenVINOInt8, FdbertEngine, FdbertNativeFP32, FdbertNativeInt8, FdbertNativeInt8Sparse,
        FdbertNativeInt8SparseInt8Attention, FdbertDistilled, FdbertDistilled50,
        DeepSparseInt8Sparse, DeepSparseFP32Sparse,
    )
}


def set_thread_environment(threads: int) -> None:
    """OMP/MKL/OpenBLAS pool sizes: read once when those libraries load, so set them first."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
