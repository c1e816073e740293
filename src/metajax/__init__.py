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
"""

from importlib.metadata import version as _version

from metajax._files import FolderError as FolderError
from metajax._validation import OptionError as OptionError
from metajax._validation import UnknownOptionError as UnknownOptionError
from metajax.algorithms.anil import ANIL as ANIL
from metajax.algorithms.anil import anil as anil
from metajax.algorithms.imaml import IMAML as IMAML
from metajax.algorithms.imaml import imaml as imaml
from metajax.algorithms.inner_loop import inner_loop_learner as inner_loop_learner
from metajax.algorithms.maml import MAML as MAML
from metajax.algorithms.maml import maml as maml
from metajax.algorithms.maml_plus_plus import MAMLPlusPlus as MAMLPlusPlus
from metajax.algorithms.maml_plus_plus import maml_plus_plus as maml_plus_plus
from metajax.algorithms.meta_sgd import MetaSGD as MetaSGD
from metajax.algorithms.meta_sgd import meta_sgd as meta_sgd
from metajax.algorithms.pretrain import Pretrain as Pretrain
from metajax.algorithms.pretrain import pretrain as pretrain
from metajax.algorithms.protomaml import ProtoMAML as ProtoMAML
from metajax.algorithms.protomaml import protomaml as protomaml
from metajax.algorithms.protonet import ProtoNet as ProtoNet
from metajax.algorithms.protonet import protonet as protonet
from metajax.algorithms.reptile import Reptile as Reptile
from metajax.algorithms.reptile import reptile as reptile
from metajax.config.algorithm import Algorithm as Algorithm
from metajax.config.algorithm import SettingWarning as SettingWarning
from metajax.config.family import Metric as Metric
from metajax.config.family import TaskFamily as TaskFamily
from metajax.config.registry import register_algorithm as register_algorithm
from metajax.config.registry import register_family as register_family
from metajax.config.run_config import RunConfig as RunConfig
from metajax.config.run_config import presets as presets
from metajax.config.training_settings import TrainSettings as TrainSettings
from metajax.core.linear_head import LinearHead as LinearHead
from metajax.core.memory import OutOfMemoryError as OutOfMemoryError
from metajax.core.meta_learner import LossFn as LossFn
from metajax.core.meta_learner import MetaLearner as MetaLearner
from metajax.core.meta_learner import Params as Params
from metajax.core.meta_steps import TaskSampler as TaskSampler
from metajax.core.meta_steps import TrainState as TrainState
from metajax.core.meta_steps import init_train_state as init_train_state
from metajax.core.meta_steps import train_steps as train_steps
from metajax.core.micro_batching import micro_batched as micro_batched
from metajax.core.sharding import task_mesh as task_mesh
from metajax.core.task import Task as Task
from metajax.core.training_loop import NonFiniteError as NonFiniteError
from metajax.core.training_loop import TrainResult as TrainResult
from metajax.core.training_loop import meta_train as meta_train
from metajax.data.image_set import DataError as DataError
from metajax.data.image_set import ImageSet as ImageSet
from metajax.data.loading import load_image_set as load_image_set
from metajax.evaluation.adaptation import adaptation_curve as adaptation_curve
from metajax.evaluation.adaptation import mean_and_ci95 as mean_and_ci95
from metajax.evaluation.harness import evaluate as evaluate
from metajax.evaluation.settings import EvalSettings as EvalSettings
from metajax.evaluation.settings import EvaluationError as EvaluationError
from metajax.models import MLP as MLP
from metajax.models import Conv4 as Conv4
from metajax.models import conv2d as conv2d
from metajax.models import conv4 as conv4
from metajax.models import cross_entropy as cross_entropy
from metajax.models import mlp as mlp
from metajax.models import mse_loss as mse_loss
from metajax.runs.compilation_cache import enable_compilation_cache as enable_compilation_cache
from metajax.runs.figures import plot as plot
from metajax.runs.loaded_run import LoadedRun as LoadedRun
from metajax.runs.loaded_run import load as load
from metajax.runs.metrics import MetricsSink as MetricsSink
from metajax.runs.run_dir import RunDirError as RunDirError
from metajax.runs.run_dir import load_config as load_config
from metajax.runs.stop_signals import Interrupted as Interrupted
from metajax.runs.training import resume as resume
from metajax.runs.training import train as train
from metajax.runs.training_run import Diverged as Diverged
from metajax.tasks.class_sampler import ClassPool as ClassPool
from metajax.tasks.class_sampler import class_pool as class_pool
from metajax.tasks.class_sampler import sample_classification_tasks as sample_classification_tasks
from metajax.tasks.images import ImageClassification as ImageClassification
from metajax.tasks.images import Omniglot as Omniglot
from metajax.tasks.sinusoid import Sinusoid as Sinusoid
from metajax.tasks.sinusoid import SinusoidConfig as SinusoidConfig
from metajax.tasks.sinusoid import SinusoidDistribution as SinusoidDistribution

__version__ = _version("metajax")

__all__ = [
    "ANIL",
    "IMAML",
    "MAML",
    "MLP",
    "Algorithm",
    "ClassPool",
    "Conv4",
    "DataError",
    "Diverged",
    "EvalSettings",
    "EvaluationError",
    "FolderError",
    "ImageClassification",
    "ImageSet",
    "Interrupted",
    "LinearHead",
    "LoadedRun",
    "LossFn",
    "MAMLPlusPlus",
    "MetaLearner",
    "MetaSGD",
    "Metric",
    "MetricsSink",
    "NonFiniteError",
    "Omniglot",
    "OptionError",
    "OutOfMemoryError",
    "Params",
    "Pretrain",
    "ProtoMAML",
    "ProtoNet",
    "Reptile",
    "RunConfig",
    "RunDirError",
    "SettingWarning",
    "Sinusoid",
    "SinusoidConfig",
    "SinusoidDistribution",
    "Task",
    "TaskFamily",
    "TaskSampler",
    "TrainResult",
    "TrainSettings",
    "TrainState",
    "UnknownOptionError",
    "adaptation_curve",
    "anil",
    "class_pool",
    "conv2d",
    "conv4",
    "cross_entropy",
    "enable_compilation_cache",
    "evaluate",
    "imaml",
    "init_train_state",
    "inner_loop_learner",
    "load",
    "load_config",
    "load_image_set",
    "maml",
    "maml_plus_plus",
    "mean_and_ci95",
    "meta_sgd",
    "meta_train",
    "micro_batched",
    "mlp",
    "mse_loss",
    "plot",
    "presets",
    "pretrain",
    "protomaml",
    "protonet",
    "register_algorithm",
    "register_family",
    "reptile",
    "resume",
    "sample_classification_tasks",
    "task_mesh",
    "train",
    "train_steps",
]
