"""Completion webhooks: endpoints a key registers, signed events POSTed when its jobs end."""
