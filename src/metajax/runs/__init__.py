"""Runs in a directory: a config trained into a run directory (``config.json``,
``metrics.jsonl``, checkpoints, ``params.eqx``, figures, ``summary.json``), resumed bit for bit
after a stop, and read back ready to adapt (:func:`~metajax.load`). Here are the run directory's
files, checkpoints, metrics sinks, stop signals, what a config builds for training, and the
figures of a finished run. It works for any registered family and algorithm without naming
one. It may import only metajax.config, metajax.core, metajax.options, metajax.plots,
metajax._files and metajax._validation.
"""
