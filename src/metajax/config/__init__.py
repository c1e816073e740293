"""What a run is made of, and the names it is known by.

The interfaces every task family and algorithm implements (:class:`~metajax.TaskFamily`,
:class:`~metajax.Algorithm`: frozen dataclasses of declared settings), the training settings
(:class:`~metajax.TrainSettings`), the registry that knows families and algorithms by name, a
run's config (:class:`~metajax.RunConfig`: one family, one algorithm and the training settings,
as ``config.json`` holds it) and the random streams of a seed. No files, no command line. It
may import only metajax.core, metajax.options and metajax._validation.
"""
