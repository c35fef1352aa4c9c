"""How the CPU encoder groups a call's texts, and that a text met again is not encoded again."""

from __future__ import annotations

import numpy as np
import pytest

from memsvc.embedding import similar_length_batches


def test_batches_hold_each_text_once_longest_first_and_of_similar_length() -> None:
    lengths = np.array([3, 120, 40, 38, 41, 90, 3, 5, 37, 39, 42, 40, 36, 44])
    batches = similar_length_batches(lengths, batch_size=4, min_share=0.8)
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(len(lengths)))
    assert lengths[rows].tolist() == sorted(lengths.tolist(), reverse=True)
    for batch in batches:
        assert 1 <= len(batch) <= 4
        assert lengths[batch].min() >= 0.8 * lengths[batch[0]]
    # The 120-token text is not padded against, nor pads, the 90 and the ~40s.
    assert [lengths[b].tolist() for b in batches[:3]] == [[120], [90], [44, 42, 41, 40]]


def test_min_share_zero_is_plain_batches_of_the_sorted_texts() -> None:
    lengths = np.array([5, 50, 7, 30, 9])
    batches = similar_length_batches(lengths, batch_size=2, min_share=0.0)
    assert [lengths[b].tolist() for b in batches] == [[50, 30], [9, 7], [5]]


def test_a_text_met_again_gets_its_cached_vector() -> None:
    pytest.importorskip("onnxruntime")
    from memsvc.embedding import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder(device="cpu", threads=1, backend="onnx-int8")
    first = "Caroline: I went to a LGBTQ support group yesterday and it was so powerful."
    other = "Melanie: That's great! I painted a lake sunrise last year, by the water at dawn."
    together = embedder.embed([first, other])
    # int8 activations are quantised per batch: encoded alone, the text's vector is a little
    # different, so equality below can only come from the cache.
    assert not np.array_equal(embedder._embed_onnx([first])[0], together[0])
    again = embedder.embed(["a line never seen", first, first])
    assert np.array_equal(again[1], together[0]) and np.array_equal(again[2], together[0])
    assert again.shape == (3, 384) and again.dtype == np.float32
    # What the caller gets is a copy: changing it leaves the cache alone.
    again[1] *= 2
    assert np.array_equal(embedder.embed([first])[0], together[0])


def test_batches_run_at_once_give_the_vectors_of_one_thread() -> None:
    pytest.importorskip("onnxruntime")
    from memsvc.embedding import SentenceTransformerEmbedder

    words = "we talked about the lake trip the dog the new job and the painting class".split()
    # Texts of many lengths: several batches, so the threads really run side by side.
    texts = [f"Line {i}: " + " ".join(words[: 3 + i % 12]) for i in range(60)]
    one = SentenceTransformerEmbedder(device="cpu", threads=1, backend="onnx-int8")
    several = SentenceTransformerEmbedder(device="cpu", threads=3, backend="onnx-int8")
    assert one._batch_pool is None and several.parallel_batches == 3
    assert np.array_equal(one.embed(texts), several.embed(texts))


def test_gpu_batches_are_padded_to_few_shapes() -> None:
    from memsvc.embedding import bucketed

    shapes = set()
    for rows in range(1, 300, 7):
        for width in range(3, 260, 11):
            ids = np.ones((rows, width), dtype=np.int64)
            padded_ids, mask = bucketed(ids, np.ones_like(ids), max_rows=256, max_tokens=256)
            assert np.array_equal(padded_ids[:rows, :width], ids) and mask[:rows, :width].all()
            assert not mask[:rows, width:].any() and (mask[rows:, 0] == 1).all() and not mask[rows:, 1:].any()
            shapes.add(padded_ids.shape)
    # 6 row counts (8 ... 256) x 8 widths (32 ... 256), plus batches larger than both limits.
    assert {s for s in shapes if s[0] <= 256 and s[1] <= 256} <= {
        (r, w) for r in (8, 16, 32, 64, 128, 256) for w in range(32, 257, 32)
    }


def test_padding_rows_and_tokens_leave_the_vectors_alone() -> None:
    import torch

    from memsvc.embedding import SentenceTransformerEmbedder, bucketed

    embedder = SentenceTransformerEmbedder(device="cpu", threads=1, backend="torch", cpu_bf16=False)
    texts = ["Caroline went to a support group.", "Melanie painted a lake at sunrise last year."]
    [(rows, ids, mask)] = list(embedder._token_batches(texts, 0.0))

    def vectors(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        features = {
            "input_ids": torch.from_numpy(ids),
            "attention_mask": torch.from_numpy(mask),
            "token_type_ids": torch.zeros_like(torch.from_numpy(ids)),
        }
        with torch.inference_mode():
            return embedder._model(features)["sentence_embedding"][: len(rows)].numpy()

    padded = vectors(*bucketed(ids, mask, 256, 256))
    assert padded.shape == (2, 384)
    assert np.allclose(vectors(ids, mask), padded, atol=1e-5)


def test_the_graphed_pass_computes_what_the_models_modules_compute() -> None:
    # What a CUDA graph captures (`_encode_mean_pooled`: the encoder with a 4-D padding mask, our
    # own mean pooling) gives the model's vectors, padding rows and tokens included.
    import torch

    from memsvc.embedding import (
        SentenceTransformerEmbedder,
        _encode_mean_pooled,
        bucketed,
        mean_pooled_transformer,
    )

    embedder = SentenceTransformerEmbedder(device="cpu", threads=1, backend="torch", cpu_bf16=False)
    encoder = mean_pooled_transformer(embedder._model)
    assert encoder is not None
    texts = ["Caroline went to a support group.", "Melanie painted a lake at sunrise last year, at dawn."]
    [(rows, ids, mask)] = list(embedder._token_batches(texts, 0.0))
    ids, mask = bucketed(ids, mask, 256, 256)
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
    with torch.inference_mode():
        ours = _encode_mean_pooled(encoder, ids_t, mask_t).numpy()
        features = {"input_ids": ids_t, "attention_mask": mask_t, "token_type_ids": torch.zeros_like(ids_t)}
        theirs = embedder._model(features)["sentence_embedding"].numpy()
    assert ours.shape == (8, 384)
    assert np.allclose(ours, theirs, atol=1e-5)
    assert np.allclose(ours[: len(rows)], embedder.embed(texts)[rows], atol=1e-5)


def test_a_model_other_than_mean_pooling_keeps_the_eager_path() -> None:
    from memsvc.embedding import SentenceTransformerEmbedder, mean_pooled_transformer

    embedder = SentenceTransformerEmbedder(device="cpu", threads=1, backend="torch", cpu_bf16=False)
    model = embedder._model
    assert mean_pooled_transformer(model) is not None
    model[1].pooling_mode = "cls"
    try:
        assert mean_pooled_transformer(model) is None
    finally:
        model[1].pooling_mode = "mean"
    assert not embedder.cuda_graphs  # CPU: never


def test_token_batches_hold_each_texts_own_ids_then_padding() -> None:
    from memsvc.embedding import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder(device="cpu", threads=1, backend="torch", cpu_bf16=False)
    texts = ["Hi!", "", "Caroline went to a support group yesterday.", "ok " * 300, "Melanie paints lakes."]
    seen = []
    for rows, input_ids, mask in embedder._token_batches(texts, 0.5):
        for j, i in enumerate(rows):
            own = embedder._tokenizer.encode(texts[i]).ids
            n = len(own)
            assert input_ids[j, :n].tolist() == own and not input_ids[j, n:].any()
            assert mask[j, :n].all() and not mask[j, n:].any()
            seen.append(int(i))
    assert sorted(seen) == list(range(len(texts)))
