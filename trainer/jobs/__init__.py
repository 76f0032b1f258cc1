"""Training jobs on the daemon: spec, checks, data, runner, events, generation."""
