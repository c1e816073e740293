"""``metajax data`` on bad input: the dataset and the folder are checked before anything is
downloaded, each refusal names the argument, prints no traceback and changes no file."""

import sys

import pytest
from bad_input import refused, snapshot

CASES = [
    (
        ["mnist", "{root}/data"],
        "argument dataset: invalid choice: 'mnist' (choose from ",
    ),  # quoted or not, by Python's version
    (["omniglot", ""], "argument DIR: '' is an empty name; name a folder"),
    (["omniglot", " "], "argument DIR: ' ' is an empty name; name a folder"),
    (["omniglot", "{root}/afile"], "argument DIR: '{root}/afile' is a file; choose a folder for "),
    (
        ["omniglot", "{root}/afile/data"],
        "argument DIR: '{root}/afile/data' cannot be created: '{root}/afile' is a file, not a "
        "folder",
    ),
    (["omniglot"], "the following arguments are required: DIR"),
]
if sys.platform == "linux":  # a folder that takes no new folders, whoever runs the test
    CASES.append(
        (["omniglot", "/proc/data"], "argument DIR: '/proc/data' cannot be created in '/proc': ")
    )


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_a_bad_dataset_or_folder_is_named_before_any_download(
    tmp_path, args, message, capsys, monkeypatch
):
    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr("urllib.request.urlopen", no_download)
    (tmp_path / "afile").write_text("not a folder")
    before = snapshot(tmp_path)
    command = ["data", *(arg.format(root=tmp_path) for arg in args), "--no-progress"]
    status, error = refused(command, capsys)
    assert status == 2
    assert error.startswith("metajax data: error: ") and message.format(root=tmp_path) in error
    assert snapshot(tmp_path) == before
