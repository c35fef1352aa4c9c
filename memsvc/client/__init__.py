"""Python SDK for memsvc: `MemoryClient` and `AsyncMemoryClient`, typed results, one error hierarchy."""

from memsvc.client._client import AsyncMemoryClient, MemoryClient
from memsvc.client._errors import (
    APIError,
    AuthenticationError,
    BadRequest,
    ConnectionFailed,
    MemsvcClientError,
    NotFoundError,
    Overloaded,
    ServerError,
    ServiceUnavailable,
)
from memsvc.schemas import AddResponse, ContextResponse, GraphResponse, JobOut, MemoryList, MemoryOut

__all__ = [
    "APIError",
    "AddResponse",
    "AsyncMemoryClient",
    "AuthenticationError",
    "BadRequest",
    "ConnectionFailed",
    "ContextResponse",
    "GraphResponse",
    "JobOut",
    "MemoryClient",
    "MemoryList",
    "MemoryOut",
    "MemsvcClientError",
    "NotFoundError",
    "Overloaded",
    "ServerError",
    "ServiceUnavailable",
]
