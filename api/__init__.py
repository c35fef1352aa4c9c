"""HTTP adapter: turns REST calls into calls on `memsvc.service.MemoryService`."""

from memsvc.api.app import create_app

__all__ = ["create_app"]
