"""Progress lines of long trainings (registry.base.progress): about every tenth epoch, the last,
and any epoch that ends after ten quiet minutes, with the pace and what is left; the same lines
from a worker process, named by its training."""

from __future__ import annotations

import itertools

from bioprior.registry.base.progress import EpochLines, ForwardingReporter, PlainReporter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


STATS = {"loss": 0.5, "accuracy": 0.8}


def _lines(epochs: int, seconds_per_epoch: float) -> list[str]:
    clock = Clock()
    lines = EpochLines(epochs, clock=clock)
    out = []
    for epoch in range(epochs):
        clock.now += seconds_per_epoch
        line = lines.line(epoch, STATS)
        if line:
            out.append(line)
    return out


def test_short_epochs_print_about_ten_lines():
    lines = _lines(150, 5.0)
    assert [line.split()[1] for line in lines] == [f"{e}/150" for e in range(15, 151, 15)]
    assert lines[0] == "epoch 15/150 loss 0.5000 accuracy 0.800 (5.0 s an epoch, ~11.2 min left)"
    assert lines[-1] == "epoch 150/150 loss 0.5000 accuracy 0.800"  # done: nothing left


def test_long_epochs_print_whenever_ten_minutes_passed():
    """Fig. 4A's HMAX: 150 epochs of about 8 minutes on a CPU print every other epoch, not every
    fifteenth (two hours of silence)."""
    lines = _lines(150, 8 * 60.0)
    done = [int(line.split()[1].split("/")[0]) for line in lines]
    assert done[:4] == [2, 4, 6, 8] and done[-1] == 150
    assert all(b - a <= 2 for a, b in itertools.pairwise(done))
    assert "(8.0 min an epoch, ~19.7 h left)" in lines[0]


def test_a_resumed_training_times_its_epochs_from_the_first_it_finishes():
    """A training resumed mid-epoch: its first epoch here is partial and is not counted."""
    clock = Clock()
    lines = EpochLines(150, clock=clock)
    clock.now += 30.0  # the rest of epoch 41
    assert lines.line(40, STATS) is None
    clock.now += 700.0  # epoch 42, 700 s: more than ten quiet minutes since the start
    assert lines.line(41, STATS).endswith("(11.7 min an epoch, ~21.0 h left)")


def test_worker_lines_name_their_training_and_plain_lines_do_not():
    sent: list = []
    worker = ForwardingReporter(sent.append)
    worker.training_started("hmax on fashion_mnist (seed 0)", 10)
    for epoch in range(10):
        worker.epoch_done(epoch, STATS)
    assert [m for _, m in sent][-1] == (
        "  epoch 10/10 loss 0.5000 accuracy 0.800: hmax on fashion_mnist (seed 0)"
    )
    assert len(sent) == 10 and all(kind == "message" for kind, _ in sent)

    said: list[str] = []
    plain = PlainReporter(every=5)
    plain._say = said.append
    plain.training_started("x", 10)
    for epoch in range(10):
        plain.epoch_done(epoch, STATS)
    assert [s.split()[1] for s in said[1:]] == ["5/10", "10/10"]
