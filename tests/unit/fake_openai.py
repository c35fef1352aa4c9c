"""A real HTTP server on 127.0.0.1 that speaks just enough of the OpenAI chat-completions API.

Each test scripts the replies it wants, in order (good JSON, garbage, a slow answer, a 500), and
afterwards reads the requests the server got. The last reply repeats once the script runs out.

    with FakeOpenAI() as server:
        server.script(Reply(status=500), Reply(content={"facts": [], ...}))
        extractor = LLMExtractor(server.base_url, "test-model")
        ...
        assert server.requests[0].body["model"] == "test-model"
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    """One scripted answer.

    `content` is the assistant message's content: a dict or list is sent as JSON text, a string as is.
    `body` replaces the whole HTTP body (for answers that are not even chat completions).
    `delay_s` holds the answer back, to make the client time out.
    """

    status: int = 200
    content: Any = None
    body: str | None = None
    delay_s: float = 0.0


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeOpenAI:
    """The server; a context manager that starts it on a free port and stops it."""

    replies: list[Reply] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def script(self, *replies: Reply) -> None:
        """Set the replies for the next requests, in order."""
        with self._lock:
            self.replies = list(replies)

    def start(self) -> FakeOpenAI:
        """Bind to a free port on 127.0.0.1 and serve in a background thread."""
        handler = _handler_for(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; replies still being held back are cut short."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            if not self.replies:
                return Reply(status=500, body='{"error": {"message": "no reply scripted"}}')
            return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


def completion(content: Any, model: str = "fake-model") -> dict[str, Any]:
    """A chat-completions response body around an assistant message's content."""
    text = content if isinstance(content, str) else json.dumps(content)
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def _handler_for(server: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                body = {"_unparseable": raw.decode("utf-8", "replace")}
            reply = server._next(Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            if reply.delay_s and server._stopping.wait(reply.delay_s):
                return
            if reply.body is not None:
                payload = reply.body
            elif reply.status >= 400:
                payload = json.dumps(
                    {"error": {"message": f"scripted {reply.status}", "type": "server_error"}}
                )
            else:
                payload = json.dumps(completion(reply.content, body.get("model", "fake-model")))
            data = payload.encode()
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (a timeout test); nothing to tell it

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    return Handler
