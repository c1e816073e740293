"""The core: what meta-training is, as pure functions of JAX that touch no files.

A task is a :class:`~metajax.Task` of support and query sets; an algorithm is a
:class:`~metajax.MetaLearner`, a record of pure functions; meta-training
(:func:`~metajax.meta_train`) fuses many meta-steps into each compiled call. Around that loop:
micro-batching (a meta-batch's meta-gradient in chunks), sharding (task batches over a device
mesh), memory checks (work too large for the device refused before it runs) and agreement
between the processes of a multi-process run. It may import only metajax._validation.
"""
