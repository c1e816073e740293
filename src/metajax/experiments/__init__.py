"""Complete experiments: a config in, a run directory out."""
