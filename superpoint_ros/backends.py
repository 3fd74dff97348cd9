"""Ways to run the SuperPoint network: eager PyTorch (with layout/precision/CUDA-graph options)
or ONNX Runtime on CPU. Each runner maps a ``(B, 1, H, W)`` float32 image batch (H, W multiples
of 8) to ``{"logits": (B, 65, H/8, W/8), "descriptors": (B, D, H/8, W/8)}`` on the extractor's
device; values may be fp16/bf16, callers convert.

Every fast option is *safe to fall back*: when a capture, compilation or export fails the runner
logs one warning, records the reason in ``runner.fallbacks`` and runs the plain eager path.
"""
from __future__ import annotations

import copy
import hashlib
import importlib.util
import io
import logging
import threading
import warnings
from contextlib import contextmanager
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from torch import nn

from .model import SuperPointNet

log = logging.getLogger(__name__)

Outputs = Dict[str, torch.Tensor]

#: How many input shapes a CUDA-graph runner keeps captured (each holds its own buffers).
MAX_CAPTURED_SHAPES = 4


def cpu_has_native_bf16() -> bool:
    """True when oneDNN runs bf16 convolutions natively (AVX512-BF16 or AMX), i.e. bf16 is fast."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device, fp16: bool) -> torch.dtype:
    """``precision`` option -> network dtype.

    ``auto``: fp16 on CUDA when ``fp16`` is set (the historical option), else fp32; fp32 on CPU.
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
    raise ValueError(f"precision must be auto, fp32, fp16 or bf16, got {precision!r}")


_threads_lock = threading.Lock()


@contextmanager
def single_threaded_torch(device: torch.device):
    """Run the enclosed CPU torch ops on one thread (decoding, matching).

    Why: they are many small ops; split over OpenMP threads each one waits at a barrier for a
    core, and on a robot (or a shared 2-core machine) the other core is often busy, which measured
    10-100x slower than one thread (docs/benchmarks.md). No-op on CUDA or with one thread already.
    """
    if device.type != "cpu" or torch.get_num_threads() == 1:
        yield
        return
    with _threads_lock:
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(previous)


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
        if device.type == "cuda":
            # a camera's frame size is fixed: let cuDNN time its algorithms once per shape
            torch.backends.cudnn.benchmark = True
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

    Float32 throughout; it must agree with eager PyTorch to ~1e-4 (tested in test/test_backends.py).
    """

    def __init__(self, model: SuperPointNet, num_threads: Optional[int] = None):
        super().__init__()
        import onnxruntime as ort  # optional dependency: pip install onnxruntime

        self.config = model.config
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(num_threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no busy-waiting between calls: on a robot the cores are shared with the rest of the stack
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(export_onnx(model), options, providers=["CPUExecutionProvider"])
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
    """Runner around :class:`OnnxRuntimeNet` (CPU, float32)."""

    name = "onnxruntime+float32"

    def __init__(self, model: SuperPointNet, num_threads: Optional[int] = None):
        self.device, self.dtype, self.fallbacks = torch.device("cpu"), torch.float32, []
        self.model = OnnxRuntimeNet(model, num_threads)

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


def make_runner(model: SuperPointNet, device: torch.device, conf: dict):
    """The runner the extractor options ask for (``backend``, ``precision``, ``channels_last``,
    ``cuda_graphs``, ``compile``), falling back to eager PyTorch if ONNX Runtime is unusable."""
    backend = conf["backend"]
    if backend not in ("auto", "torch", "onnxruntime"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'onnxruntime', got {backend!r}")
    dtype = resolve_precision(conf["precision"], device, conf["fp16"])
    if backend == "auto":
        # measured (docs/benchmarks.md): on the CPU, ONNX Runtime float32 beats every eager
        # float32 variant; torch everywhere else and whenever onnxruntime is not installed
        wants_ort = device.type == "cpu" and dtype == torch.float32 and not conf["compile"]
        if wants_ort and importlib.util.find_spec("onnxruntime") is not None:
            try:
                return OnnxRuntimeRunner(model, conf["num_threads"])
            except Exception as e:  # noqa: BLE001 - exporter/runtime mismatch: run eager instead
                runner = TorchRunner(model, device, dtype, conf["channels_last"])
                runner._fall_back(f"ONNX export/session failed: {e}")
                return runner
        backend = "torch"
    if backend == "onnxruntime":
        if device.type != "cpu":
            raise ValueError("backend='onnxruntime' runs on the CPU only (use backend='torch' on CUDA)")
        if dtype != torch.float32:
            raise ValueError("backend='onnxruntime' runs float32 only (set precision='fp32' or 'auto')")
        try:
            return OnnxRuntimeRunner(model, conf["num_threads"])
        except ImportError as e:
            raise ValueError(f"backend='onnxruntime' needs the onnxruntime package: {e}") from None
        except Exception as e:  # noqa: BLE001 - exporter/runtime mismatch: run eager instead
            runner = TorchRunner(model, device, dtype, conf["channels_last"])
            runner._fall_back(f"ONNX export/session failed: {e}")
            return runner
    return TorchRunner(model, device, dtype, channels_last=conf["channels_last"],
                       cuda_graphs=conf["cuda_graphs"], compile=conf["compile"])


__all__ = ["OnnxRuntimeNet", "OnnxRuntimeRunner", "TorchRunner", "cpu_has_native_bf16", "export_onnx", "make_runner",
           "resolve_precision", "single_threaded_torch"]
