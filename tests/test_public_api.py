"""The public API: what ``import metajax`` offers, listed here so that a change to it is a
decision, not an accident of moving code."""

import importlib
import inspect
import types

import metajax

PUBLIC = [
    *("ANIL", "Algorithm", "ClassPool", "Conv4", "DataError", "Diverged", "EvalSettings"),
    *("EvaluationError", "IMAML", "ImageClassification", "ImageSet", "Interrupted"),
    *("LoadedRun", "LossFn", "MAML", "MAMLPlusPlus", "MLP", "MetaLearner", "MetaSGD"),
    *("Metric", "MetricsSink", "NonFiniteError", "Omniglot", "OptionError", "OutOfMemoryError"),
    *("Params", "Pretrain", "Reptile", "RunConfig", "RunDirError", "Sinusoid", "SinusoidConfig"),
    *("SinusoidDistribution", "Task", "TaskFamily", "TaskSampler", "TrainResult"),
    *("TrainSettings", "TrainState", "UnknownOptionError", "adaptation_curve", "anil"),
    *("class_pool", "conv2d", "conv4", "cross_entropy", "evaluate", "imaml"),
    *("init_train_state", "inner_loop_learner", "load", "load_config", "load_image_set"),
    *("maml", "maml_plus_plus", "mean_and_ci95", "meta_sgd", "meta_train", "micro_batched"),
    *("mlp", "mse_loss", "plot", "presets", "pretrain", "register_algorithm"),
    *("register_family", "reptile", "resume", "sample_classification_tasks", "task_mesh"),
    *("train", "train_steps"),
    *("LinearHead", "ProtoMAML", "ProtoNet", "SettingWarning", "protomaml", "protonet"),
    "FolderError",
    "enable_compilation_cache",
    "DivergenceWarning",
]


def test_the_public_names_are_exactly_these():
    assert sorted(metajax.__all__) == sorted(PUBLIC)
    assert len(set(metajax.__all__)) == len(metajax.__all__)
    # Nothing public beyond them but the version and the sub-packages.
    extra = [
        name
        for name in dir(metajax)
        if not name.startswith("_")
        and name not in PUBLIC
        and not isinstance(getattr(metajax, name), types.ModuleType)
    ]
    assert extra == []
    assert isinstance(metajax.__version__, str) and metajax.__version__


def test_each_public_class_and_function_is_re_exported_from_where_it_is_defined():
    aliases = {"LossFn", "Params", "TaskSampler"}  # type aliases: Callable, Any
    for name in sorted(set(PUBLIC) - aliases):
        value = getattr(metajax, name)
        assert inspect.isclass(value) or inspect.isfunction(value), name
        module = importlib.import_module(value.__module__)
        assert value.__module__.startswith("metajax."), (name, value.__module__)
        assert getattr(module, value.__name__) is value, name
