"""metajax: gradient-based meta-learning in JAX."""

from importlib.metadata import version as _version

from metajax._validation import OptionError as OptionError
from metajax.algorithms.maml import maml as maml
from metajax.algorithms.meta_learner import LossFn as LossFn
from metajax.algorithms.meta_learner import MetaLearner as MetaLearner
from metajax.algorithms.meta_learner import Params as Params
from metajax.algorithms.pretrain import pretrain as pretrain
from metajax.evaluation import adaptation_curve as adaptation_curve
from metajax.evaluation import mean_and_ci95 as mean_and_ci95
from metajax.models import MLP as MLP
from metajax.models import mlp as mlp
from metajax.models import mse_loss as mse_loss
from metajax.tasks.sinusoid import SINUSOID_PRESETS as SINUSOID_PRESETS
from metajax.tasks.sinusoid import Sinusoid as Sinusoid
from metajax.tasks.sinusoid import SinusoidFamily as SinusoidFamily
from metajax.tasks.task import Task as Task
from metajax.training import NonFiniteError as NonFiniteError
from metajax.training import TaskSampler as TaskSampler
from metajax.training import TrainResult as TrainResult
from metajax.training import TrainState as TrainState
from metajax.training import init_train_state as init_train_state
from metajax.training import meta_train as meta_train
from metajax.training import train_steps as train_steps

__version__ = _version("metajax")

__all__ = [
    "MLP",
    "SINUSOID_PRESETS",
    "LossFn",
    "MetaLearner",
    "NonFiniteError",
    "OptionError",
    "Params",
    "Sinusoid",
    "SinusoidFamily",
    "Task",
    "TaskSampler",
    "TrainResult",
    "TrainState",
    "adaptation_curve",
    "init_train_state",
    "maml",
    "mean_and_ci95",
    "meta_train",
    "mse_loss",
    "pretrain",
    "train_steps",
]
