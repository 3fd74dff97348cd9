"""Ways to run the SuperPoint network: eager PyTorch (with layout/precision/CUDA-graph options)
or ONNX Runtime on CPU (float32, or int8 after static quantisation). Each runner maps a
``(B, 1, H, W)`` float32 image batch (H, W multiples of 8) to ``{"logits": (B, 65, H/8, W/8),
"descriptors": (B, D, H/8, W/8)}`` on the extractor's device; values may be fp16/bf16, callers
convert.

Every fast option is *safe to fall back*: when a capture, compilation or export fails the runner
logs one warning, records the reason in ``runner.fallbacks`` and runs the plain eager path.
"""
from __future__ import annotations

import copy
import hashlib
import importlib.util
import io
import logging
import re
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Protocol, runtime_checkable

import cv2
import numpy as np
import torch
from torch import nn

from .model import SuperPointNet

log = logging.getLogger(__name__)

Outputs = Dict[str, torch.Tensor]

#: How many input shapes a CUDA-graph runner keeps captured (each holds its own buffers).
MAX_CAPTURED_SHAPES = 4
#: Training-split photos whose activation ranges calibrate the int8 network (README.md there).
CALIBRATION_DIR = Path(__file__).resolve().parent / "calibration"
#: Layers kept in float32 by the int8 quantisation: the heads' last convolutions produce the logits
#: and descriptors themselves (quantising them moves keypoints; the rest is where the time goes).
INT8_FLOAT_LAYERS = ("convPb", "convDb")


@runtime_checkable
class NetworkRunner(Protocol):
    """What :class:`superpoint_ros.extractor.FeatureExtractor` needs from a way to run the network
    (:class:`TorchRunner`, :class:`OnnxRuntimeRunner`; :func:`make_runner` picks one).

    ``runner(batch)``: ``(B, 1, H, W)`` float32 in [0, 1], H and W multiples of 8 ->
    ``{"logits": (B, 65, H/8, W/8), "descriptors": (B, D, H/8, W/8)}`` on ``device`` (dtype may be
    ``dtype``: fp16/bf16; callers convert). ``model``: the ``nn.Module`` that runs, with the
    network's ``config`` (forward hooks on it see every call). ``name``: what runs, e.g.
    ``torch+float32+channels_last``. ``fallbacks``: why a faster path asked for is not used.
    """

    device: torch.device
    dtype: torch.dtype
    model: nn.Module
    fallbacks: List[str]

    @property
    def name(self) -> str: ...

    def __call__(self, batch: torch.Tensor) -> Outputs: ...


def cpu_has_native_bf16() -> bool:
    """True when oneDNN runs bf16 convolutions natively (AVX512-BF16 or AMX), i.e. bf16 is fast."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_has_fast_int8() -> bool:
    """True on CPUs with int8 dot-product instructions (x86 AVX512-VNNI or AVX-VNNI, ARM dot
    product), where ONNX Runtime's int8 convolutions are fast and do not saturate (x86 CPUs without
    VNNI use an int8 instruction that can)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"\b(avx512_vnni|avx_vnni|asimddp)\b", cpuinfo) is not None


def auto_precision_is_int8(device: torch.device, conf: dict, cpu_dot_product: Optional[bool] = None) -> bool:
    """Whether ``precision='auto'`` picks int8: CPU, ``backend='auto'``, no ``compile``, a CPU with
    :func:`cpu_has_fast_int8` (``cpu_dot_product``; ``None`` = this CPU), and ONNX Runtime + onnx
    installed. Measured on such a CPU (docs/benchmarks.md): 2.2-2.9x faster than float32 with the
    same homography and rosbag metrics."""
    fast = cpu_has_fast_int8() if cpu_dot_product is None else cpu_dot_product
    return (device.type == "cpu" and conf["precision"] == "auto" and conf["backend"] == "auto"
            and not conf["compile"] and fast
            and importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None)


def resolve_precision(precision: str, device: torch.device, fp16: bool) -> torch.dtype:
    """``precision`` option -> network dtype.

    ``auto``: fp16 on CUDA when ``fp16`` is set (the historical option), else fp32; fp32 on CPU
    (:func:`make_runner` turns ``auto`` into int8 where :func:`auto_precision_is_int8`).
    ``bf16`` on a CPU without native bf16 is refused (it would be several times slower).
    """
    if precision == "auto":
        return torch.float16 if (device.type == "cuda" and fp16) else torch.float32
    if precision == "fp32":
        return torch.float32
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError("precision='fp16' needs a CUDA device (use 'bf16' or 'fp32' on CPU)")
        return torch.float16
    if precision == "bf16":
        if device.type == "cpu" and not cpu_has_native_bf16():
            raise ValueError("precision='bf16' needs a CPU with AVX512-BF16 or AMX (this one has neither); "
                             "use 'fp32'")
        return torch.bfloat16
    if precision == "int8":
        if device.type != "cpu":
            raise ValueError("precision='int8' runs on the CPU only (ONNX Runtime); use 'fp16' on CUDA")
        return torch.float32  # what the runner returns; the int8 work happens inside ONNX Runtime
    raise ValueError(f"precision must be auto, fp32, fp16, bf16 or int8, got {precision!r}")


#: torch's intra-op thread count when this module was imported (OMP_NUM_THREADS, else the cores),
#: before any entry point's :func:`configure_process`: ONNX Runtime sessions default to it.
DEFAULT_CPU_THREADS = torch.get_num_threads()


def configure_process(num_threads: Optional[int] = None, seed: int = 0) -> None:
    """The process-wide settings of an entry point; each ``main()`` calls this once, first thing.
    Library code changes none of them (it would change every other user in the process).

    - torch's intra-op CPU threads: ``num_threads``, default **1**. Why: decoding and matching
      are many small ops, each waiting at an OpenMP barrier for a busy core when split over
      threads. Measured on the shared 2-core machine (``python -m bench.threads``: 480x640,
      shipped model, interleaved; three runs at load average 0.8-6.5; docs/benchmarks.md "Torch
      threads"): on 2 threads decoding was 2.0-7.5x, matching 2.6-20x and the eager network
      1.30-1.35x slower than on 1. The CPU network's default, ONNX Runtime, has its own threads
      (the extractor's ``num_threads``, default :data:`DEFAULT_CPU_THREADS`).
    - ``torch.backends.cudnn.benchmark``: on. A camera's frame size is fixed, so cuDNN times its
      algorithms once per shape.
    - OpenCV's global RNG seeded with ``seed`` (for this thread), so anything drawing from it
      repeats run to run. (The robust estimators used here do not: classic RANSAC has a fixed-seed
      generator of its own and USAC its own state; tested in test/test_backends.py.)
    """
    import cv2

    if num_threads is not None and int(num_threads) < 1:
        raise ValueError(f"num_threads must be >= 1 or None (one thread), got {num_threads!r}")
    torch.set_num_threads(int(num_threads or 1))
    torch.backends.cudnn.benchmark = True
    cv2.setRNGSeed(int(seed))


class TorchRunner:
    """Eager PyTorch forward with optional channels_last, reduced precision, CUDA graphs and
    torch.compile."""

    def __init__(self, model: SuperPointNet, device: torch.device, dtype: torch.dtype,
                 channels_last: bool = True, cuda_graphs: bool = False, compile: bool = False):
        self.device, self.dtype = device, dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # a copy: converting in place would change the caller's model (and other runners sharing it)
        self.model = copy.deepcopy(model).to(device, dtype).eval().to(memory_format=self.memory_format)
        self.forward: Callable[[torch.Tensor], Outputs] = self.model
        self.fallbacks: List[str] = []
        self.use_cuda_graphs = bool(cuda_graphs) and device.type == "cuda"
        self.graphs: Dict[tuple, tuple] = {}
        self.compiled = False
        if compile:
            try:
                self.forward, self.compiled = torch.compile(self.model, dynamic=False), True
            except Exception as e:  # noqa: BLE001 - any backend failure means: run eager
                self._fall_back(f"torch.compile unavailable: {e}")

    @property
    def name(self) -> str:
        parts = ["torch", str(self.dtype).replace("torch.", ""),
                 "channels_last" if self.memory_format == torch.channels_last else "nchw"]
        if self.use_cuda_graphs:
            parts.append("cuda_graphs")
        if self.compiled:
            parts.append("compiled")
        return "+".join(parts)

    def _fall_back(self, reason: str) -> None:
        log.warning("superpoint_ros: %s; using the eager path", reason)
        self.fallbacks.append(reason)

    def prepare(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, self.dtype, non_blocking=True).contiguous(memory_format=self.memory_format)

    def __call__(self, batch: torch.Tensor) -> Outputs:
        x = self.prepare(batch)
        if self.use_cuda_graphs:
            try:
                return self._replay(x)
            except Exception as e:  # noqa: BLE001 - capture can fail on old drivers/allocators
                self.use_cuda_graphs, self.graphs = False, {}
                self._fall_back(f"CUDA graph capture failed: {e}")
        try:
            return self.forward(x)
        except Exception as e:  # noqa: BLE001 - torch.compile errors surface at the first call
            if self.forward is self.model:
                raise
            self.forward, self.compiled = self.model, False
            self._fall_back(f"torch.compile failed: {e}")
            return self.model(x)

    def _replay(self, x: torch.Tensor) -> Outputs:
        """Run the network as a CUDA graph captured once per input shape (no per-layer launches).

        The returned tensors are the graph's static outputs: valid until the next call, which is
        how the extractor uses them (decoding copies what it keeps).
        """
        key = (tuple(x.shape), x.dtype)
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.graphs) >= MAX_CAPTURED_SHAPES:
                self.graphs.pop(next(iter(self.graphs)))
            static_input = x.clone()
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):  # warm-up outside the capture (cuDNN autotuning etc.)
                for _ in range(2):
                    self.forward(static_input)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: CUDA work of other threads (a ROS executor, a second extractor) during
            # the capture neither breaks it nor gets recorded into it
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                static_output = self.forward(static_input)
            entry = self.graphs[key] = (graph, static_input, static_output)
        graph, static_input, static_output = entry
        static_input.copy_(x)
        graph.replay()
        return dict(static_output)


class OnnxRuntimeNet(nn.Module):
    """The network exported to ONNX (in memory) and run by ONNX Runtime's CPU provider, behind the
    same module interface as :class:`SuperPointNet` (``config``, dict outputs, forward hooks).

    Float32: it must agree with eager PyTorch to ~1e-4 (tested in test/test_backends.py). ``int8``:
    the graph of :func:`quantize_onnx` (inputs and outputs stay float32).
    """

    def __init__(self, model: SuperPointNet, num_threads: Optional[int] = None, int8: bool = False):
        super().__init__()
        import onnxruntime as ort  # optional dependency: pip install onnxruntime

        self.config = model.config
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(num_threads or DEFAULT_CPU_THREADS)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no busy-waiting between calls: on a robot the cores are shared with the rest of the stack
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # no memory pattern: with it the second run of a shape plans one block for all activations
        # while the first run's arena chunks stay held, doubling the peak (8000x8000 mono8 frame at
        # image.max_size 1280: 2.2 GB instead of 1.3 GB; python -m bench.memory)
        options.enable_mem_pattern = False
        graph = quantize_onnx(model) if int8 else export_onnx(model)
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]

    def forward(self, image: torch.Tensor) -> Outputs:
        images = image.detach().to("cpu", torch.float32).contiguous().numpy()
        # one image per run: ORT may pick kernels by batch size, so a batched run could differ in
        # the last bits from a single one; on the CPU batching buys nothing, and results stay
        # reproducible (an image gives the same keypoints alone and in a stereo batch)
        runs = [self.session.run(self.output_names, {"image": images[i:i + 1]}) for i in range(len(images))]
        return {name: torch.from_numpy(np.concatenate([r[k] for r in runs]) if len(runs) > 1 else runs[0][k])
                for k, name in enumerate(self.output_names)}


class OnnxRuntimeRunner:
    """Runner around :class:`OnnxRuntimeNet` (CPU; float32 or int8 network, float32 outputs)."""

    def __init__(self, model: SuperPointNet, num_threads: Optional[int] = None, int8: bool = False):
        self.device, self.dtype, self.fallbacks = torch.device("cpu"), torch.float32, []
        self.name = f"onnxruntime+{'int8' if int8 else 'float32'}"
        self.model = OnnxRuntimeNet(model, num_threads, int8)

    def __call__(self, batch: torch.Tensor) -> Outputs:
        return self.model(batch)


class _TupleOutputs(nn.Module):
    """ONNX graphs have positional outputs: wrap the dict-returning network."""

    def __init__(self, model: SuperPointNet):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):
        out = self.model(image)
        return out["logits"], out["descriptors"]


_exported: Dict[str, bytes] = {}  # weights fingerprint -> ONNX bytes (re-export costs ~0.3 s)


def _fingerprint(model: SuperPointNet, opset: int) -> str:
    digest = hashlib.sha1(repr((model.config, opset)).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def export_onnx(model: SuperPointNet, opset: int = 17) -> bytes:
    """The network as ONNX bytes with dynamic batch, height and width (input ``image``, outputs
    ``logits`` and ``descriptors``). Cached per weights within the process."""
    key = _fingerprint(model, opset)
    if key not in _exported:
        _exported[key] = _export(model, opset)
    return _exported[key]


def _export(model: SuperPointNet, opset: int) -> bytes:
    cpu_model = SuperPointNet(model.config).eval()
    cpu_model.load_state_dict({k: v.detach().float().cpu() for k, v in model.state_dict().items()})
    buffer = io.BytesIO()
    example = torch.zeros(1, 1, 64, 64)
    with warnings.catch_warnings():  # the exporter warns about the shape checks it traces through
        warnings.simplefilter("ignore")
        torch.onnx.export(_TupleOutputs(cpu_model), (example,), buffer, input_names=["image"],
                          output_names=["logits", "descriptors"], opset_version=opset, dynamo=False,
                          dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                        "logits": {0: "batch", 2: "cells_y", 3: "cells_x"},
                                        "descriptors": {0: "batch", 2: "cells_y", 3: "cells_x"}})
    return buffer.getvalue()


_quantized: Dict[str, bytes] = {}  # weights fingerprint -> int8 ONNX bytes (quantising costs ~0.7 s)


def calibration_batches() -> List[np.ndarray]:
    """The calibration photos as ``(1, 1, 240, 320)`` float32 arrays in [0, 1]."""
    paths = sorted(CALIBRATION_DIR.glob("*.jpg"))
    if not paths:
        raise FileNotFoundError(f"no int8 calibration photos in {CALIBRATION_DIR}")
    batches = []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise FileNotFoundError(f"cannot read int8 calibration photo {path}")
        batches.append((image.astype(np.float32) / 255.0)[None, None])
    return batches


def int8_weight_type(cpu_dot_product: Optional[bool] = None) -> str:
    """Weight type of the int8 network for a CPU: ``"int8"`` where the CPU has int8 dot products
    (:func:`cpu_has_fast_int8`; ``None`` = this CPU), else ``"uint8"``. x86 CPUs without VNNI
    multiply uint8 activations by int8 weights with an instruction that saturates at 16 bits,
    which ONNX Runtime documents and which measured here (AVX2, no VNNI) left 44 % of the
    keypoints within 1 px of float32's and a descriptor cosine p05 of 0.05; uint8 weights take a
    path that does not saturate (87 % within 1 px, as on VNNI)."""
    fast = cpu_has_fast_int8() if cpu_dot_product is None else cpu_dot_product
    return "int8" if fast else "uint8"


def quantize_onnx(model: SuperPointNet, weight_type: Optional[str] = None) -> bytes:
    """:func:`export_onnx` statically quantised by ONNX Runtime: QDQ format, per-channel weights of
    ``weight_type`` (``"int8"`` or ``"uint8"``; ``None`` = :func:`int8_weight_type` for this
    CPU), uint8 activations with ranges measured on :func:`calibration_batches`, the
    :data:`INT8_FLOAT_LAYERS` left in float32. Fast on CPUs with int8 dot products (AVX512-VNNI,
    AVX-VNNI, ARM dot-product). Cached per weights within the process."""
    weight_type = int8_weight_type() if weight_type is None else weight_type
    if weight_type not in ("int8", "uint8"):
        raise ValueError(f"int8 weight_type must be 'int8' or 'uint8', got {weight_type!r}")
    key = _fingerprint(model, 17) + weight_type
    if key not in _quantized:
        _quantized[key] = _quantize(export_onnx(model), weight_type)
    return _quantized[key]


def _quantize(graph: bytes, weight_type: str) -> bytes:
    import onnx  # optional (the train extra): only int8 quantisation needs it
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Photos(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration_batches())

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"image": batch}

    proto = onnx.load_from_string(graph)
    keep_float = [n.name for n in proto.graph.node if n.op_type == "Conv"
                  and any(f"/{layer}/" in n.name or n.name.startswith(f"{layer}") for layer in INT8_FLOAT_LAYERS)]
    with tempfile.TemporaryDirectory(prefix="superpoint_int8_") as folder:
        source, prepared, target = (Path(folder) / n for n in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        source.write_bytes(graph)
        # shape inference + graph clean-up first, as ONNX Runtime recommends before quantising
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(target), Photos(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8 if weight_type == "int8" else QuantType.QUInt8,
                        nodes_to_exclude=keep_float)
        return target.read_bytes()


def make_runner(model: SuperPointNet, device: torch.device, conf: dict) -> NetworkRunner:
    """The runner the extractor options ask for (``backend``, ``precision``, ``channels_last``,
    ``cuda_graphs``, ``compile``); ONNX Runtime falls back as :func:`onnxruntime_runner` says."""
    backend = conf["backend"]
    if backend not in ("auto", "torch", "onnxruntime"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'onnxruntime', got {backend!r}")
    precision = "int8" if auto_precision_is_int8(device, conf) else conf["precision"]
    dtype = resolve_precision(precision, device, conf["fp16"])
    if precision == "int8":
        if backend == "torch":
            raise ValueError("precision='int8' runs on ONNX Runtime: use backend 'auto' or 'onnxruntime'")
        if importlib.util.find_spec("onnxruntime") is None:
            raise ValueError("precision='int8' needs the onnxruntime package (pip install onnxruntime onnx)")
    elif backend == "onnxruntime":
        if device.type != "cpu":
            raise ValueError("backend='onnxruntime' runs on the CPU only (use backend='torch' on CUDA)")
        if dtype != torch.float32:
            raise ValueError("backend='onnxruntime' runs float32 only (set precision='fp32' or 'auto')")
    elif backend == "auto":
        # measured (docs/benchmarks.md): on the CPU, ONNX Runtime float32 beats every eager
        # float32 variant; torch everywhere else and whenever onnxruntime is not installed
        wants_ort = device.type == "cpu" and dtype == torch.float32 and not conf["compile"]
        backend = "onnxruntime" if wants_ort and importlib.util.find_spec("onnxruntime") is not None else "torch"
    if precision != "int8" and backend == "torch":
        return TorchRunner(model, device, dtype, channels_last=conf["channels_last"],
                           cuda_graphs=conf["cuda_graphs"], compile=conf["compile"])
    return onnxruntime_runner(model, conf, int8=precision == "int8", required=conf["backend"] == "onnxruntime")


def onnxruntime_runner(model: SuperPointNet, conf: dict, int8: bool = False, required: bool = False) -> NetworkRunner:
    """An :class:`OnnxRuntimeRunner` (CPU), int8 or float32, with the one fall-back chain: int8
    quantisation fails -> float32 ONNX Runtime; export or session fails -> eager float32 PyTorch
    (``conf["channels_last"]``). Each step taken is logged once and kept in ``runner.fallbacks``.
    ``required`` (``backend='onnxruntime'`` asked for by name): a missing onnxruntime package is a
    ``ValueError`` instead of a fall-back."""
    reasons = []
    if int8:
        try:
            return OnnxRuntimeRunner(model, conf["num_threads"], int8=True)
        except Exception as e:  # noqa: BLE001 - quantiser/runtime mismatch: run float32 instead
            reasons.append(f"int8 quantisation failed, running float32: {e}")
            log.warning("int8 quantisation failed, running float32 ONNX Runtime: %s", e)
    try:
        runner = OnnxRuntimeRunner(model, conf["num_threads"])
    except Exception as e:  # noqa: BLE001 - exporter/runtime mismatch: run eager instead
        if required and isinstance(e, ImportError):
            raise ValueError(f"backend='onnxruntime' needs the onnxruntime package: {e}") from None
        runner = TorchRunner(model, torch.device("cpu"), torch.float32, conf["channels_last"])
        runner.fallbacks.extend(reasons)
        runner._fall_back(f"ONNX export/session failed: {e}")
        return runner
    runner.fallbacks.extend(reasons)
    return runner


__all__ = ["NetworkRunner", "OnnxRuntimeNet", "OnnxRuntimeRunner", "TorchRunner", "auto_precision_is_int8", "calibration_batches",
           "cpu_has_fast_int8", "cpu_has_native_bf16", "export_onnx", "int8_weight_type", "make_runner", "onnxruntime_runner", "quantize_onnx", "resolve_precision", "configure_process", "DEFAULT_CPU_THREADS"]
