"""Sizes too large for the machine: every integer option is bounded, and work that would not
fit in memory is refused before it runs, with a message that names the sizes behind it."""

import math
import re

import pytest

import metajax
from metajax.cli import main
from metajax.core import memory

SIZES = re.compile(
    r"needs more memory than this device has: about [\d,.]+ GiB at its peak, "
    r"with [\d,.]+ GiB available\. The sizes that set it: (.*); choose smaller ones"
)


@pytest.mark.parametrize(
    "args, named",
    [
        (["--meta-batch-size", "2147483647"], "--meta-batch-size 2147483647"),
        (["--shots", "2147483647"], "--shots 2147483647"),
        (["--query-shots", "300000000"], "--query-shots 300000000"),
        # The task batches of a compiled call's 10**8 steps, drawn at once: 128 GB.
        (
            [
                "--steps-per-call",
                "100000000",
                "--meta-steps",
                "100000000",
                "--checkpoint-every",
                "100000000",
            ],
            "--steps-per-call 100000000",
        ),
    ],
)
def test_training_that_cannot_fit_is_refused_before_it_runs(tmp_path, capsys, args, named):
    out = tmp_path / "run"
    assert main(["train", "sinusoid", *args, "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("metajax: error: meta-training needs more memory"), err
    (sizes,) = SIZES.search(err).groups()
    assert named in sizes and "--hidden-sizes 40 40" in sizes and "Traceback" not in err
    # Nothing was trained, and nothing is left: the same command with smaller sizes works.
    assert list(out.iterdir()) == []


def too_wide():
    """A hidden size whose square weight matrix takes four times the memory available, which
    XLA refuses to allocate: 100000 (40 GB) on a machine with 23 GB free."""
    return max(100000, 2 * math.isqrt(memory.available_bytes() // 4))


def test_a_model_too_large_to_build_is_an_error_that_names_its_sizes(tmp_path, capsys):
    width = too_wide()
    args = ["train", "sinusoid", "--hidden-sizes", str(width), str(width), "--out", str(tmp_path)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        "metajax: error: building the model needs more memory than this device has: "
        f"RESOURCE_EXHAUSTED: Out of memory allocating {4 * width * width} bytes. The sizes that "
        "set it: "
    ), err
    assert f"--hidden-sizes {width} {width}" in err


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("memory") / "run"
    config = metajax.presets("sinusoid")["tutorial"].replace(meta_steps=10, steps_per_call=10)
    metajax.train(config, out, progress=False, plots=False)
    return out


@pytest.mark.parametrize(
    "args, sizes",
    [
        (
            ["--num-tasks", "2000000000"],
            "--num-tasks 2000000000, --adapt-steps 10, --shots 5 10 20, --query-shots 100",
        ),
        (
            ["--adapt-steps", "2000000000", "--shots", "5"],
            "--num-tasks 600, --adapt-steps 2000000000, --shots 5, --query-shots 100",
        ),
        (
            ["--shots", "2000000000", "--query-shots", "shots"],
            "--num-tasks 600, --adapt-steps 10, --shots 2000000000, --query-shots 2000000000",
        ),
    ],
)
def test_evaluation_that_cannot_fit_is_refused_before_it_runs(small_run, capsys, args, sizes):
    assert main(["eval", str(small_run), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("metajax: error: evaluation needs more memory"), err
    assert SIZES.search(err).group(1) == sizes
    assert not (small_run / "eval.json").exists()


def test_the_library_raises_an_out_of_memory_error_with_the_python_names(tmp_path):
    width = too_wide()
    config = metajax.presets("sinusoid")["tutorial"].replace(hidden_sizes=(width, width))
    with pytest.raises(memory.OutOfMemoryError) as caught:
        metajax.train(config, tmp_path / "run", progress=False)
    error = caught.value
    assert isinstance(error, MemoryError) and error.what == "building the model"
    assert error.sizes["hidden_sizes"] == (width, width)
    assert str(error).endswith(
        "The sizes that set it: meta_batch_size=4, steps_per_call=1000, shots=20, "
        f"query_shots=20, hidden_sizes={width} {width}, inner_steps=1; choose smaller ones, "
        "or split each meta-batch with micro_batches=M"
    )
