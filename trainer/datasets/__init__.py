"""Datasets on the daemon: ingest, storage layout and splits for jobs."""
