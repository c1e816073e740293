"""Meta-learning algorithms: each module is one algorithm, registered by name (see
:mod:`metajax.registry`)."""
