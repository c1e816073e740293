"""Meta-learning algorithms: each module is one algorithm, registered by name (see
:mod:`metajax.registry`)."""

# MAML registers first: the registry's order is that of listings, --algorithm's choices and the
# help of flags several algorithms share.
from metajax.algorithms import maml as maml
