"""The checkpoint cadence: due once its interval passed with something new to commit."""

from __future__ import annotations

from exporter.cli.commands import stopped_line
from exporter.run.cadence import Cadence
from exporter.stats import RunStats


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TestCadence:
    def test_due_only_after_the_interval_with_progress(self) -> None:
        """Nothing written: never due; written: due once `every_s` has passed."""
        clock = Clock()
        cadence = Cadence(60, clock)
        clock.now += 61
        assert not cadence.due()
        cadence.wrote()
        assert cadence.due()
        assert cadence.remaining() == -1

    def test_a_commit_starts_the_next_interval(self) -> None:
        """After a commit the next one is due `every_s` later, whatever was written."""
        clock = Clock()
        cadence = Cadence(60, clock)
        cadence.wrote()
        clock.now += 30
        assert not cadence.due() and cadence.remaining() == 30
        cadence.committed()
        cadence.wrote()
        clock.now += 59
        assert not cadence.due()
        clock.now += 1
        assert cadence.due()


class TestStoppedLine:
    def test_nothing_committed_says_nothing_is_kept(self) -> None:
        stats = RunStats(images=500, pages=5)
        line = stopped_line("SIGTERM", stats)
        assert line == "stopped by SIGTERM before the first checkpoint: nothing is kept to resume"

    def test_committed_images_are_named(self) -> None:
        stats = RunStats(images=130_000, pages=130, committed_images=122_000, committed_pages=122)
        assert stopped_line("SIGINT", stats) == (
            "stopped by SIGINT; the checkpoint keeps 122,000 images (122 pages) in committed "
            "parts: --resume continues after them"
        )

    def test_a_restored_checkpoint_is_committed(self) -> None:
        stats = RunStats()
        stats.restore({"images": 2_000, "pages": 20})
        assert (stats.committed_images, stats.committed_pages) == (2_000, 20)
