"""Task families: pure, jit-able samplers of task batches."""
