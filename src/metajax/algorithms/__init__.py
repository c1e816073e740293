"""Meta-learning algorithms, one module each: a factory returning a
:class:`~metajax.MetaLearner` over any loss and pytree of parameters, and its hyper-parameters
as a registered :class:`~metajax.Algorithm`. Importing this package registers them all, in the
order below. It may import only metajax.config, metajax.core, metajax.options and
metajax._validation.
"""

# Registered in this order, which listings, --algorithm's choices and shared flags' help follow.
# isort: off
from metajax.algorithms import maml as maml
from metajax.algorithms import anil as anil
from metajax.algorithms import imaml as imaml
from metajax.algorithms import maml_plus_plus as maml_plus_plus
from metajax.algorithms import meta_sgd as meta_sgd
from metajax.algorithms import pretrain as pretrain
from metajax.algorithms import protomaml as protomaml
from metajax.algorithms import protonet as protonet
from metajax.algorithms import reptile as reptile
# isort: on
