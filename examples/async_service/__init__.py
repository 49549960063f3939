"""A peer: the users service on SQLAlchemy's asyncio engine over aiosqlite (see app.py)."""
