"""One encoder per accelerator, shared by every worker process on the machine.

Worker processes that each load the model onto one GPU time-slice it: every job's small embedding
call queues behind the others' (on an H200, 8 workers made a job's embedding 1.4x slower than one
worker alone and kept the encoder over half of ingest time). `EncoderServer` holds the one model and
coalesces the requests of all connected workers into large batches (`DynamicBatcher`);
`RemoteEmbedder` is the `Embedder` the workers use instead of a model of their own.

The workers tokenize (the server hands them its tokenizer when they connect), so the one process
that holds the GPU only runs the model: tokenizing every worker's texts there took a third of each
call (H200, 16 jobs' 1,321 texts: 20 of 63 ms).

The transport is a Unix socket readable only by its owner, and no message is unpickled: a request
is token ids as u32 arrays (or the JSON list of texts, for a model without a fast tokenizer), an
answer is raw float32 rows (or an error text); ids are checked against the vocabulary and the
model's length, so a stray client can at most ask for embeddings.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import threading
from collections.abc import Sequence
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from memsvc.batching import DynamicBatcher
from memsvc.embedding import Embedder, SentenceTransformerEmbedder, Vectors
from memsvc.errors import NotReady

log = logging.getLogger(__name__)

_OK, _ERROR = b"\x00", b"\x01"
_TEXTS, _IDS = b"T", b"I"  # a request's first byte: what follows
Request = tuple[bytes, list[Any]]  # (_TEXTS, texts) or (_IDS, token-id arrays)


def ids_request(ids: Sequence[Sequence[int]]) -> bytes:
    """Token-id sequences as one request: u32 count, u32 length of each, then every id as u32."""
    lengths = np.fromiter((len(i) for i in ids), dtype="<u4", count=len(ids))
    flat = np.concatenate([np.asarray(i, dtype="<u4") for i in ids]) if ids else np.zeros(0, "<u4")
    return _IDS + struct.pack("<I", len(ids)) + lengths.tobytes() + flat.tobytes()


def parse_ids(body: bytes, vocab_size: int, max_tokens: int) -> list[npt.NDArray[np.int64]]:
    """The token-id sequences of an `ids_request` body; ValueError unless every length is 1 to
    `max_tokens` and every id is in the vocabulary (an id out of range would fault the device)."""
    if len(body) < 4:
        raise ValueError("a token-id request starts with its count")
    (count,) = struct.unpack_from("<I", body)
    lengths = np.frombuffer(body, dtype="<u4", count=count, offset=4)
    flat = np.frombuffer(body, dtype="<u4", offset=4 + 4 * count)
    if int(lengths.sum()) != len(flat) or (lengths == 0).any() or (lengths > max_tokens).any():
        raise ValueError("token-id lengths do not match the ids, or a text is empty or too long")
    if len(flat) and int(flat.max()) >= vocab_size:
        raise ValueError("a token id is outside the model's vocabulary")
    return np.split(flat.astype(np.int64), np.cumsum(lengths)[:-1]) if count else []


class EncoderServer:
    """Serves `embedder` on the Unix socket `address` until `close()`."""

    def __init__(self, embedder: Embedder, address: str | Path, *, max_wait_s: float = 0.002) -> None:
        self.embedder = embedder
        self.address = str(address)
        # A request is one job's texts; a batch joins the requests of every worker waiting now.
        self._batcher: DynamicBatcher[Request, Vectors] = DynamicBatcher(
            self._embed_requests, max_wait_s=max_wait_s, max_size=1024
        )
        hello: dict[str, Any] = {"model_name": embedder.model_name, "dim": embedder.dim}
        # Workers tokenize when the model has a fast tokenizer to hand them.
        self._tokenizing: SentenceTransformerEmbedder | None = None
        if isinstance(embedder, SentenceTransformerEmbedder) and (tokenizer := embedder.tokenizer_json()):
            self._tokenizing = embedder
            hello["tokenizer"] = tokenizer
        self._hello_bytes = json.dumps(hello).encode()
        Path(self.address).unlink(missing_ok=True)
        old_mask = os.umask(0o177)  # the socket is created 0600: only its owner may connect
        try:
            self._listener = Listener(self.address, family="AF_UNIX")
        finally:
            os.umask(old_mask)
        self._closed = threading.Event()
        self._clients: set[Connection] = set()
        self._clients_lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, name="encoder-accept", daemon=True)
        self._thread.start()

    def _embed_requests(self, requests: Sequence[Request]) -> list[Vectors]:
        """One model call per kind of request in the batch; each request gets its own rows."""
        out: list[Vectors] = [np.zeros((0, self.embedder.dim), dtype=np.float32)] * len(requests)
        for kind in (_IDS, _TEXTS):
            picked = [i for i, (k, items) in enumerate(requests) if k == kind and items]
            if not picked:
                continue
            items = [item for i in picked for item in requests[i][1]]
            if kind == _IDS and self._tokenizing is not None:
                vectors = self._tokenizing.embed_token_ids(items)
            else:
                vectors = self.embedder.embed(items)
            start = 0
            for i in picked:
                out[i] = vectors[start : start + len(requests[i][1])]
                start += len(requests[i][1])
        return out

    def _request(self, message: bytes) -> Request:
        kind, body = message[:1], message[1:]
        if kind == _IDS and self._tokenizing is not None:
            return _IDS, parse_ids(body, self._tokenizing.vocab_size, self._tokenizing.max_tokens)
        if kind == _TEXTS:
            texts = json.loads(body)
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise ValueError("a request is a JSON list of strings")
            return _TEXTS, texts
        raise ValueError("unknown request")

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn = self._listener.accept()
            except OSError:
                return  # the listener was closed
            threading.Thread(target=self._serve, args=(conn,), name="encoder-client", daemon=True).start()

    def _serve(self, conn: Connection) -> None:
        with self._clients_lock:
            self._clients.add(conn)
        try:
            self._answer(conn)
        except (OSError, EOFError):
            pass  # the worker went away, or the server closed its connection
        finally:
            with self._clients_lock:
                self._clients.discard(conn)
            conn.close()

    def _answer(self, conn: Connection) -> None:
        """Answer one worker's requests until it goes away or the server closes."""
        conn.send_bytes(self._hello_bytes)
        while not self._closed.is_set():
            try:
                request = conn.recv_bytes()
            except (EOFError, OSError):
                return  # the worker went away
            try:
                vectors = self._batcher(self._request(request))
                answer = _OK + struct.pack("<II", *vectors.shape) + np.ascontiguousarray(vectors).tobytes()
            except Exception as exc:  # the worker gets the reason; the server keeps serving
                answer = _ERROR + f"{type(exc).__name__}: {exc}".encode()
            try:
                conn.send_bytes(answer)
            except OSError:
                return

    @property
    def batches(self) -> int:
        return self._batcher.batches

    @property
    def requests(self) -> int:
        return self._batcher.items

    def serve_forever(self) -> None:
        self._closed.wait()

    def close(self) -> None:
        """Stop serving: connected workers see their connection end (and open a new one to the next
        server at this address)."""
        self._closed.set()
        self._listener.close()
        with self._clients_lock:
            for conn in self._clients:
                # Shut the socket down under its serving thread, which then reads EOF and closes it
                # (closing the Connection from here would pull the handle from under its read).
                with (
                    contextlib.suppress(OSError),
                    socket.fromfd(conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as sock,
                ):
                    sock.shutdown(socket.SHUT_RDWR)
        self._batcher.close()
        Path(self.address).unlink(missing_ok=True)


class RemoteEmbedder:
    """An `Embedder` whose model lives in an `EncoderServer`; one connection per calling thread,
    opened again once if the server restarted between calls."""

    def __init__(self, address: str | Path) -> None:
        self.address = str(address)
        self._local = threading.local()
        hello = self._connect()
        self.model_name = str(hello["model_name"])
        self.dim: int = int(hello["dim"])
        self._tokenizer: Any = None
        if "tokenizer" in hello:
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_str(str(hello["tokenizer"]))

    def _connect(self) -> dict[str, Any]:
        try:
            conn = Client(self.address, family="AF_UNIX")
            hello: dict[str, Any] = json.loads(conn.recv_bytes())
        except (OSError, EOFError) as exc:
            raise NotReady(f"no encoder at {self.address}: {exc}") from exc
        self._local.conn = conn
        return hello

    def _ask(self, request: bytes) -> bytes:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            self._connect()
            conn = self._local.conn
        conn.send_bytes(request)
        return conn.recv_bytes()

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._tokenizer is not None:
            request = ids_request([e.ids for e in self._tokenizer.encode_batch(list(texts))])
        else:
            request = _TEXTS + json.dumps(list(texts)).encode()
        try:
            answer = self._ask(request)
        except (OSError, EOFError):
            # The server restarted since this thread's last call: one fresh connection, then give up.
            self._local.conn = None
            try:
                answer = self._ask(request)
            except (OSError, EOFError) as exc:
                self._local.conn = None
                raise NotReady(f"the encoder at {self.address} is unreachable: {exc}") from exc
        if answer[:1] != _OK:
            raise RuntimeError(f"encoder failed: {answer[1:].decode(errors='replace')}")
        rows, dim = struct.unpack("<II", answer[1:9])
        return np.frombuffer(answer, dtype=np.float32, offset=9).reshape(rows, dim).copy()
