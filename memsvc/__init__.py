"""memsvc: long-term memory for LLM agents on PostgreSQL + pgvector.

The server's parts are `memsvc.service` (the operations), `memsvc.search` and `memsvc.ingest`;
the SDK is `memsvc.client`.
"""

# The one version of the package: pyproject.toml reads it, the API reports it.
__version__ = "0.1.0"

__all__ = ["__version__"]
