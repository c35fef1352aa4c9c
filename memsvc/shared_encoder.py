"""One encoder per accelerator, shared by every worker process on the machine.

Worker processes that each load the model onto one GPU time-slice it: every job's small embedding
call queues behind the others' (on an H200, 8 workers made a job's embedding 1.4x slower than one
worker alone and kept the encoder over half of ingest time). `EncoderServer` holds the one model and
coalesces the requests of all connected workers into large batches (`DynamicBatcher`);
`RemoteEmbedder` is the `Embedder` the workers use instead of a model of their own.

The transport is a Unix socket readable only by its owner, and no message is unpickled: a request
is the JSON list of texts, an answer is raw float32 rows (or an error text), so a stray client can
at most ask for embeddings.
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

import numpy as np

from memsvc.batching import DynamicBatcher
from memsvc.embedding import Embedder, Vectors
from memsvc.errors import NotReady

log = logging.getLogger(__name__)

_OK, _ERROR = b"\x00", b"\x01"


class EncoderServer:
    """Serves `embedder` on the Unix socket `address` until `close()`."""

    def __init__(self, embedder: Embedder, address: str | Path, *, max_wait_s: float = 0.002) -> None:
        self.embedder = embedder
        self.address = str(address)
        # A request is one job's texts; a batch joins the requests of every worker waiting now.
        self._batcher: DynamicBatcher[list[str], Vectors] = DynamicBatcher(
            self._embed_requests, max_wait_s=max_wait_s, max_size=1024
        )
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

    def _embed_requests(self, requests: Sequence[list[str]]) -> list[Vectors]:
        vectors = self.embedder.embed([text for texts in requests for text in texts])
        out, start = [], 0
        for texts in requests:
            out.append(vectors[start : start + len(texts)])
            start += len(texts)
        return out

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
        hello = {"model_name": self.embedder.model_name, "dim": self.embedder.dim}
        conn.send_bytes(json.dumps(hello).encode())
        while not self._closed.is_set():
            try:
                request = conn.recv_bytes()
            except (EOFError, OSError):
                return  # the worker went away
            try:
                texts = json.loads(request)
                if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                    raise ValueError("a request is a JSON list of strings")
                vectors = self._batcher(texts)
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

    def _connect(self) -> dict[str, str | int]:
        try:
            conn = Client(self.address, family="AF_UNIX")
            hello: dict[str, str | int] = json.loads(conn.recv_bytes())
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
        request = json.dumps(list(texts)).encode()
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
