"""metajax: gradient-based meta-learning in JAX.

The library in layers: algorithms (:func:`maml`, :func:`anil`, :func:`meta_sgd`,
:func:`maml_plus_plus`, :func:`imaml`, :func:`reptile`, :func:`pretrain`) are records of pure
functions over any pytree model and loss;
:func:`meta_train` is the fused outer loop; task families (:class:`SinusoidConfig`) and
algorithms are registered by name, and a :class:`RunConfig` of one of each plus
:class:`TrainSettings` is a run, which :func:`train`, :func:`resume`, :func:`load`,
:func:`plot` and :func:`evaluate` handle in a run directory.
"""

from importlib.metadata import version as _version

from metajax._validation import OptionError as OptionError
from metajax._validation import UnknownOptionError as UnknownOptionError
from metajax.algorithms.algorithm import Algorithm as Algorithm
from metajax.algorithms.anil import ANIL as ANIL
from metajax.algorithms.anil import anil as anil
from metajax.algorithms.imaml import IMAML as IMAML
from metajax.algorithms.imaml import imaml as imaml
from metajax.algorithms.inner_loop import inner_loop_learner as inner_loop_learner
from metajax.algorithms.maml import MAML as MAML
from metajax.algorithms.maml import maml as maml
from metajax.algorithms.maml_plus_plus import MAMLPlusPlus as MAMLPlusPlus
from metajax.algorithms.maml_plus_plus import maml_plus_plus as maml_plus_plus
from metajax.algorithms.meta_learner import LossFn as LossFn
from metajax.algorithms.meta_learner import MetaLearner as MetaLearner
from metajax.algorithms.meta_learner import Params as Params
from metajax.algorithms.meta_sgd import MetaSGD as MetaSGD
from metajax.algorithms.meta_sgd import meta_sgd as meta_sgd
from metajax.algorithms.pretrain import Pretrain as Pretrain
from metajax.algorithms.pretrain import pretrain as pretrain
from metajax.algorithms.reptile import Reptile as Reptile
from metajax.algorithms.reptile import reptile as reptile
from metajax.config import RunConfig as RunConfig
from metajax.config import TrainSettings as TrainSettings
from metajax.config import load_config as load_config
from metajax.config import presets as presets
from metajax.evaluation import adaptation_curve as adaptation_curve
from metajax.evaluation import mean_and_ci95 as mean_and_ci95
from metajax.harness import EvalSettings as EvalSettings
from metajax.harness import EvaluationError as EvaluationError
from metajax.harness import evaluate as evaluate
from metajax.image_data import DataError as DataError
from metajax.image_data import ImageSet as ImageSet
from metajax.image_data import load_image_set as load_image_set
from metajax.loaded_run import LoadedRun as LoadedRun
from metajax.loaded_run import load as load
from metajax.memory import OutOfMemoryError as OutOfMemoryError
from metajax.metrics import MetricsSink as MetricsSink
from metajax.micro_batching import micro_batched as micro_batched
from metajax.models import MLP as MLP
from metajax.models import Conv4 as Conv4
from metajax.models import conv2d as conv2d
from metajax.models import conv4 as conv4
from metajax.models import cross_entropy as cross_entropy
from metajax.models import mlp as mlp
from metajax.models import mse_loss as mse_loss
from metajax.registry import register_algorithm as register_algorithm
from metajax.registry import register_family as register_family
from metajax.run_dir import RunDirError as RunDirError
from metajax.run_figures import plot as plot
from metajax.runs import resume as resume
from metajax.runs import train as train
from metajax.sharding import task_mesh as task_mesh
from metajax.stop_signals import Interrupted as Interrupted
from metajax.tasks.class_sampler import ClassPool as ClassPool
from metajax.tasks.class_sampler import class_pool as class_pool
from metajax.tasks.class_sampler import sample_classification_tasks as sample_classification_tasks
from metajax.tasks.family import Metric as Metric
from metajax.tasks.family import TaskFamily as TaskFamily
from metajax.tasks.images import ImageClassification as ImageClassification
from metajax.tasks.images import Omniglot as Omniglot
from metajax.tasks.sinusoid import Sinusoid as Sinusoid
from metajax.tasks.sinusoid import SinusoidConfig as SinusoidConfig
from metajax.tasks.sinusoid import SinusoidDistribution as SinusoidDistribution
from metajax.tasks.task import Task as Task
from metajax.training import NonFiniteError as NonFiniteError
from metajax.training import TaskSampler as TaskSampler
from metajax.training import TrainResult as TrainResult
from metajax.training import TrainState as TrainState
from metajax.training import init_train_state as init_train_state
from metajax.training import meta_train as meta_train
from metajax.training import train_steps as train_steps
from metajax.training_run import Diverged as Diverged

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
    "ImageClassification",
    "ImageSet",
    "Interrupted",
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
    "Reptile",
    "RunConfig",
    "RunDirError",
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
    "register_algorithm",
    "register_family",
    "reptile",
    "resume",
    "sample_classification_tasks",
    "task_mesh",
    "train",
    "train_steps",
]
