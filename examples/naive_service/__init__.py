"""The naive baseline: the users service as the resilience report found it (see app.py)."""
