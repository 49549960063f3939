"""A peer: the users service in the FastAPI SQL tutorial's pattern (see app.py)."""
