"""Python SDK for memsvc: `MemoryClient` and `AsyncMemoryClient`, typed results, one error hierarchy.

Installable alone as the `memsvc-client` distribution (httpx and pydantic only): it imports nothing
of the server. `memsvc.client.models` holds the API's answer models, which the server uses too.
"""

from memsvc.client._client import AsyncMemoryClient, MemoryClient
from memsvc.client._errors import (
    APIError,
    AuthenticationError,
    BadRequest,
    ConnectionFailed,
    MemsvcClientError,
    NotFoundError,
    Overloaded,
    PermissionDenied,
    ServerError,
    ServiceUnavailable,
)
from memsvc.client.models import AddResponse, ContextResponse, GraphResponse, JobOut, MemoryList, MemoryOut

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
    "PermissionDenied",
    "ServerError",
    "ServiceUnavailable",
]
