"""metajax: gradient-based meta-learning in JAX.

The library in layers, each importing only those below it: the core (:class:`Task`,
:class:`MetaLearner`, :func:`meta_train`, the fused outer loop, sharded over devices with
:func:`task_mesh`); a run's config (the interfaces :class:`TaskFamily` and :class:`Algorithm`,
registered by name, and :class:`RunConfig` of one of each plus :class:`TrainSettings`);
algorithms (:func:`maml`, :func:`anil`, :func:`meta_sgd`, :func:`maml_plus_plus`, :func:`imaml`,
:func:`reptile`, :func:`pretrain`, and the metric-based :func:`protonet` and :func:`protomaml`),
records of pure functions over any pytree model and loss; task families
(:class:`SinusoidConfig`, :class:`ImageClassification`, :class:`Omniglot`) over built-in models
and image data; runs in a directory (:func:`train`, :func:`resume`, :func:`load`, :func:`plot`);
and their evaluation (:func:`evaluate`).

Each of these names is imported from its module when it is first used (the list is
metajax/__init__.pyi, which type checkers read too), so ``import metajax`` costs nothing
until then, and ``metajax --help`` need not wait for JAX.
"""

from importlib.metadata import version as _version

import lazy_loader as _lazy_loader

__getattr__, __dir__, __all__ = _lazy_loader.attach_stub(__name__, __file__)

__version__ = _version("metajax")
