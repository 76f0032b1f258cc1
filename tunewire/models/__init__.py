"""Real models: GGUF files in (import) and out (export), and SmolLM2 from its PyPI wheel.

Modules that import mlx (gguf_tensors, gguf_import, the exporters) are for
CLI commands and worker processes only, never the trainer daemon or gateway.
"""
