"""What the daemon and the worker exchange; mlx-free, imported by both sides."""
