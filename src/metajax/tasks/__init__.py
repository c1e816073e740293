"""Task families, one module each (the two image families share one): a registered
:class:`~metajax.TaskFamily` with its settings, presets, model, loss, tasks drawn on the
device, held-out tasks and figure. Importing this package registers them all, in the order
below. It may import only metajax.algorithms (for presets), metajax.config, metajax.core,
metajax.data, metajax.models, metajax.options, metajax.plots and metajax._validation.
"""

# Registered in this order, which listings and the command line's families follow.
# isort: off
from metajax.tasks import images as images
from metajax.tasks import sinusoid as sinusoid
# isort: on
