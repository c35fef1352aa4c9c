"""Queue adapter: turns procrastinate jobs into calls on `memsvc.service.MemoryService`."""
