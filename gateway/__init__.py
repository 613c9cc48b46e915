"""A WebSocket gateway that pushes Redis pub/sub notifications to authenticated users."""

__version__ = "0.1.0"
