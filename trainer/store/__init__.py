"""Persistence: the SQLite database, jobs and their events, datasets."""
