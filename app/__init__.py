"""Hardened users service: FastAPI on embedded SQLite with deadlines, retries and back-pressure."""

__version__ = "0.1.0"
