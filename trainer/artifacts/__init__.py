"""What leaves the trainer as files: a job's adapter, checkpoints and model, as
byte streams with a size, a SHA-256 and ranges (`DownloadArtifact`), one code
path for every download RPC."""
