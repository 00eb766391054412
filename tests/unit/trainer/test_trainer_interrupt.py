"""``fit(interrupt=...)``: a stop at a batch boundary (a warm shutdown) leaves no
partial epoch, and a resume from the last checkpoint equals the uninterrupted
run bit for bit; ``checkpoint_due`` asks for checkpoints beside ``checkpoint_every``."""

from __future__ import annotations

import pytest

from services.trainer import fit

from .conftest import make_spec, strip_seconds


class StopAfter:
    """An ``interrupt`` that answers True from its ``n``-th call on (one call per batch)."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls >= self.n


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_interrupt_stops_at_a_batch_and_resume_is_bit_exact(optimizer):
    spec = make_spec(
        hyperparameters={"epochs": 6, "batch_size": 32, "optimizer": optimizer, "dropout": 0.2}
    )
    full = fit(spec)
    batches_per_epoch = 5  # 160 training rows of moons (200, 20% validation) / 32
    blobs: dict[int, bytes] = {}
    seen: list[dict] = []
    stop = StopAfter(3 * batches_per_epoch + 2)  # in epoch 4, before its 2nd batch
    cut = fit(
        spec,
        on_epoch=seen.append,
        checkpoint_every=2,
        on_checkpoint=lambda epoch, blob: blobs.__setitem__(epoch, blob),
        interrupt=stop,
    )
    assert cut.status == "stopped"
    assert stop.calls == 3 * batches_per_epoch + 2  # not called again after it said stop
    assert [r["epoch"] for r in cut.history] == [1, 2, 3]  # epoch 4 is in no record
    assert [r["epoch"] for r in seen] == [1, 2, 3]
    assert sorted(blobs) == [2]
    resumed = fit(spec, resume_from=blobs[2], history=cut.history[:2])
    assert strip_seconds(resumed.history) == strip_seconds(full.history)
    assert resumed.network.params_flat.tobytes() == full.network.params_flat.tobytes()
    assert resumed.best_epoch == full.best_epoch and resumed.diagnosis == full.diagnosis


def test_interrupt_before_the_first_batch_records_nothing():
    result = fit(make_spec(), interrupt=lambda: True)
    assert result.status == "stopped" and result.history == []


def test_interrupt_that_never_fires_changes_nothing():
    spec = make_spec()
    plain, watched = fit(spec), fit(spec, interrupt=lambda: False)
    assert strip_seconds(watched.history) == strip_seconds(plain.history)
    assert watched.network.params_flat.tobytes() == plain.network.params_flat.tobytes()


def test_checkpoint_due_adds_checkpoints_even_at_a_stop():
    spec = make_spec(hyperparameters={"epochs": 6})
    blobs: dict[int, bytes] = {}
    fit(
        spec,
        checkpoint_every=4,
        checkpoint_due=lambda epoch: epoch == 1,
        on_checkpoint=lambda epoch, blob: blobs.__setitem__(epoch, blob),
        on_epoch=lambda record: record["epoch"] == 3 or None,
    )
    assert sorted(blobs) == [1]  # epoch 3 stopped the run: no checkpoint unless due asks
    blobs.clear()
    stopped = fit(
        spec,
        checkpoint_due=lambda epoch: epoch == 3,
        on_checkpoint=lambda epoch, blob: blobs.__setitem__(epoch, blob),
        on_epoch=lambda record: record["epoch"] == 3 or None,
    )
    assert stopped.status == "stopped" and sorted(blobs) == [3]
    resumed = fit(spec, resume_from=blobs[3], history=stopped.history)
    assert strip_seconds(resumed.history) == strip_seconds(fit(spec).history)
    blobs.clear()
    fit(  # never after the last epoch
        spec,
        checkpoint_due=lambda epoch: True,
        on_checkpoint=lambda epoch, blob: blobs.__setitem__(epoch, blob),
    )
    assert sorted(blobs) == [1, 2, 3, 4, 5]
