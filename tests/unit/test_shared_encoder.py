"""The shared encoder: workers' requests coalesced into one model call, each answered with its own
rows, across threads and processes, surviving a server restart and reporting failures."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from memsvc.embedding import Vectors
from memsvc.errors import NotReady
from memsvc.shared_encoder import EncoderServer, RemoteEmbedder


class HashEmbedder:
    """Deterministic vectors from the text alone, and a record of every call's size."""

    model_name = "hash"
    dim = 16

    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls: list[int] = []
        self.delay_s = delay_s

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls.append(len(texts))
        time.sleep(self.delay_s)  # a device call takes time: requests arriving meanwhile wait together
        rows = []
        for text in texts:
            if text == "boom":
                raise ValueError("cannot embed boom")
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
            v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            rows.append(v / np.linalg.norm(v))
        return np.stack(rows)


@pytest.fixture
def address(tmp_path: Path) -> Path:
    return tmp_path / "encoder.sock"


def test_each_thread_gets_its_own_rows_and_requests_share_calls(address: Path) -> None:
    model = HashEmbedder(delay_s=0.02)
    server = EncoderServer(model, address)
    client = RemoteEmbedder(address)
    assert (client.model_name, client.dim) == ("hash", 16)
    results: dict[int, Vectors] = {}

    def work(i: int) -> None:
        results[i] = client.embed([f"thread {i} text {j}" for j in range(i % 5 + 1)])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    server.close()
    for i, vectors in results.items():
        expected = HashEmbedder().embed([f"thread {i} text {j}" for j in range(i % 5 + 1)])
        np.testing.assert_array_equal(vectors, expected)
    assert len(results) == 24
    assert server.requests == 24
    assert len(model.calls) < 24, model.calls  # coalesced: fewer model calls than requests
    assert sum(model.calls) == sum(i % 5 + 1 for i in range(24))


def test_errors_reach_the_caller_and_the_server_keeps_serving(address: Path) -> None:
    server = EncoderServer(HashEmbedder(), address)
    client = RemoteEmbedder(address)
    with pytest.raises(RuntimeError, match="cannot embed boom"):
        client.embed(["fine", "boom"])
    assert client.embed(["fine"]).shape == (1, 16)
    assert client.embed([]).shape == (0, 16)
    server.close()


def test_socket_is_private_and_a_missing_server_is_not_ready(address: Path) -> None:
    server = EncoderServer(HashEmbedder(), address)
    assert stat.S_IMODE(os.stat(address).st_mode) == 0o600
    client = RemoteEmbedder(address)
    server.close()
    assert not address.exists()
    with pytest.raises(NotReady):
        client.embed(["nobody listens"])
    with pytest.raises(NotReady):
        RemoteEmbedder(address)


def test_client_reconnects_after_the_server_restarts(address: Path) -> None:
    server = EncoderServer(HashEmbedder(), address)
    client = RemoteEmbedder(address)
    before = client.embed(["same text"])
    server.close()
    server = EncoderServer(HashEmbedder(), address)
    np.testing.assert_array_equal(client.embed(["same text"]), before)
    server.close()


def test_memsvc_encoder_process_serves_the_real_model(address: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    """`memsvc encoder` in its own process, the default model on the CPU: a worker's vectors match
    its own model's (int8 activations are quantised per batch, so close rather than equal)."""
    env = {**os.environ, "MEMSVC_EMBEDDING_DEVICE": "cpu", "MEMSVC_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "memsvc.cli", "encoder", "--address", str(address)], env=env
    )
    try:
        deadline = time.monotonic() + 120
        while not address.exists():
            assert proc.poll() is None, "memsvc encoder exited"
            assert time.monotonic() < deadline, "memsvc encoder did not start"
            time.sleep(0.1)
        client = RemoteEmbedder(address)
        texts = ["I moved to Boston last spring.", "My dog Rex loves the beach.", "Thanks!"]
        remote = client.embed(texts)
        local = embedder.embed(texts)
        assert remote.shape == (3, embedder.dim)
        cosines = (remote * local).sum(axis=1)
        assert cosines.min() > 0.98, cosines
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    assert not address.exists()  # SIGTERM shut it down cleanly
