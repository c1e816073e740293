"""The ``metajax`` command: its parser, generated from the registered families and algorithms
and their declared settings; one module per subcommand's work; and the mapping of the
library's errors to messages and exit statuses. It may import every other part of metajax but
the package's face (metajax/__init__.py): metajax.evaluation, metajax.runs, metajax.tasks,
metajax.algorithms, metajax.config, metajax.core, metajax.data, metajax.models,
metajax.options, metajax.plots, metajax._files and metajax._validation.
"""

from metajax.cli.command import main as main
