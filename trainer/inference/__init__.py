"""The resident inference worker, seen from the daemon (the worker itself is trainer/worker/inference.py)."""
