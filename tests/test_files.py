"""Whole-or-nothing writes: concurrent writers of one file, a write that fails, permissions."""

import os
import threading

import pytest

from metajax._files import replace_atomically


def test_concurrent_writers_of_one_file_each_replace_it_whole(tmp_path):
    path = tmp_path / "summary.json"
    contents = [bytes([65 + writer]) * 100_000 for writer in range(4)]
    errors = []
    seen = set()

    def write_many(content):
        try:
            for _ in range(50):
                replace_atomically(path, lambda file: file.write(content))
                seen.add(path.read_bytes())  # another writer's, or this one's, but whole
        except Exception as error:  # collected for the assertion below
            errors.append(error)

    threads = [threading.Thread(target=write_many, args=(content,)) for content in contents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert seen <= set(contents)
    assert path.read_bytes() in contents
    assert sorted(os.listdir(tmp_path)) == ["summary.json"]


def test_a_write_that_fails_keeps_the_old_file_and_leaves_no_temporary_one(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b"old")

    def fail(file):
        file.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        replace_atomically(path, fail)
    assert path.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["config.json"]


def test_the_new_file_has_the_permissions_open_would_give_it(tmp_path):
    old_umask = os.umask(0o022)
    try:
        replace_atomically(tmp_path / "params.eqx", lambda file: file.write(b"x"))
    finally:
        os.umask(old_umask)
    assert (tmp_path / "params.eqx").stat().st_mode & 0o777 == 0o644
