"""Metrics sinks: metrics.jsonl is the source of truth; TensorBoard shows the same numbers, also
after a run is stopped and resumed."""

import struct
import sys

import numpy as np
import pytest
from fakes import line_config
from tensorboardX.proto import event_pb2

import metajax
from metajax.cli import main
from metajax.runs import metrics

CONFIG = line_config(meta_steps=400, steps_per_call=100, log_every=30, checkpoint_every=100)


def read_events(logdir):
    """What TensorBoard shows of the scalars in ``logdir``: ``{tag: {step: value}}``.

    Event files are read in the order of their names, as TensorBoard reads them; a
    ``SessionLog.START`` at step s (a writer opened with ``purge_step=s``) hides the events of
    steps >= s read before it."""
    scalars = {}
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        position = 0
        while position < len(data):
            (length,) = struct.unpack("<Q", data[position : position + 8])
            record = data[position + 12 : position + 12 + length]
            position += 12 + length + 4  # length, its CRC, the record, its CRC
            event = event_pb2.Event.FromString(record)
            if event.HasField("session_log") and event.session_log.status == 1:  # START
                for values in scalars.values():
                    for step in [s for s in values if s >= event.step]:
                        del values[step]
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def assert_events_match_the_metrics(out):
    records = metrics.read(out / "metrics.jsonl")
    scalars = read_events(out / "tensorboard")
    assert set(scalars) == {"train/meta_loss", "train/hit_rate"}
    for name in ("meta_loss", "hit_rate"):
        shown = scalars[f"train/{name}"]
        assert sorted(shown) == [record["step"] for record in records]
        np.testing.assert_array_equal(
            [shown[record["step"]] for record in records],
            np.float32([record[name] for record in records]),
        )
    return scalars


def test_tensorboard_shows_the_records_of_metrics_jsonl(tmp_path):
    out = tmp_path / "run"
    metajax.train(CONFIG, out, progress=False, plots=False, tensorboard=True)
    scalars = assert_events_match_the_metrics(out)
    assert sorted(scalars["train/meta_loss"]) == [*range(30, 400, 30), 400]


class ImpatientUser:
    """A metrics sink that stops the run at once when it receives the record of a step, as a
    second Ctrl-C does: no checkpoint is saved there, the newest is the last periodic one."""

    def __init__(self, step):
        self.step = step

    def write(self, step, values):
        if step == self.step:
            raise KeyboardInterrupt

    def flush(self):
        pass

    def close(self):
        pass


def test_a_resumed_run_shows_what_an_uninterrupted_run_shows(tmp_path):
    reference = tmp_path / "reference"
    metajax.train(CONFIG, reference, progress=False, plots=False, tensorboard=True)
    out = tmp_path / "run"
    # Stopped at once at the record of step 270: the newest checkpoint is at 200, so the
    # records of 210, 240 and 270, in TensorBoard too, are written again after resuming; the
    # first ones must be hidden (purged), or TensorBoard would show two of each.
    with pytest.raises(KeyboardInterrupt):
        metajax.train(
            CONFIG, out, progress=False, plots=False, tensorboard=True, sinks=[ImpatientUser(270)]
        )
    # TensorBoard got the records past the checkpoint (those before the sink that stopped it).
    assert max(read_events(out / "tensorboard")["train/meta_loss"]) > 200
    # The CLI resumes with TensorBoard because the run has a tensorboard directory.
    assert main(["train", "--resume", str(out), "--no-progress", "--no-plots"]) == 0
    files = sorted(path.name for path in (out / "tensorboard").iterdir())
    assert len(files) == 2
    assert read_events(out / "tensorboard") == read_events(reference / "tensorboard")
    assert_events_match_the_metrics(out)
    # Without the purge, the first file's records of 210 and 240 would stay: here they are the
    # same numbers, so check that the marker is there. metrics.jsonl keeps the records up to
    # the checkpoint's step, 200: through 180; the marker hides what comes after.
    data = (out / "tensorboard" / files[1]).read_bytes()
    events = []
    position = 0
    while position < len(data):
        (length,) = struct.unpack("<Q", data[position : position + 8])
        events.append(event_pb2.Event.FromString(data[position + 12 : position + 12 + length]))
        position += 12 + length + 4
    assert any(e.HasField("session_log") and e.step == 181 for e in events)


def test_without_tensorboardx_the_flag_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if it were not installed
    out = tmp_path / "run"
    assert main(["train", "lines", "--tensorboard", "--out", str(out)]) == 1
    assert capsys.readouterr().err == (
        "metajax: error: TensorBoard logging needs tensorboardX: pip install "
        "'metajax[tensorboard]'\n"
    )
    assert not out.exists()
