"""The publication tail's plan: which steps a run takes from where it stands (pure)."""

from __future__ import annotations

import pytest

from exporter.run.publication import (
    NOT_OURS,
    RESUMED_BATCH_NOT_OURS,
    RESUMED_NOT_OURS,
    Start,
    plan_tail,
)


class TestPlanTail:
    def test_a_fresh_snapshot_takes_every_step(self) -> None:
        """It seals, publishes, may hand off its change step, and clears abandoned staging."""
        steps = plan_tail(Start.FRESH, "writing", batch=False)
        assert steps.seal and not steps.publish_sealed
        assert steps.sinks and steps.retire_batches and steps.hand_off and steps.changes
        assert steps.discard_abandoned and not steps.restore_stats
        assert steps.not_ours == NOT_OURS

    @pytest.mark.parametrize(("phase", "publishes"), [("publishing", True), ("committing", False)])
    def test_a_resumed_snapshot_walks_nothing_and_seals_nothing(
        self, phase: str, publishes: bool
    ) -> None:
        """Killed while "publishing" it publishes the sealed files (unless swapped in);
        killed while "committing" it repeats only the sinks' idempotent steps."""
        steps = plan_tail(Start.RESUMED, phase, batch=False)
        assert not steps.seal and steps.publish_sealed is publishes
        assert steps.sinks and steps.retire_batches and steps.changes and steps.restore_stats
        assert not steps.hand_off and not steps.discard_abandoned
        assert steps.not_ours == RESUMED_NOT_OURS

    def test_a_handed_over_process_leaves_the_sinks_to_its_parent(self) -> None:
        """The walk's process published the sinks before it handed over the change step."""
        steps = plan_tail(Start.HANDED_OVER, "committing", batch=False)
        assert not steps.sinks and not steps.retire_batches and not steps.hand_off
        assert steps.changes and steps.restore_stats and not steps.seal
        assert steps.not_ours == RESUMED_NOT_OURS

    def test_another_dates_committing_run_completes_its_sinks_and_changes(self) -> None:
        steps = plan_tail(Start.OTHER_DATE, "committing", batch=False)
        assert not steps.seal and not steps.publish_sealed and not steps.hand_off
        assert steps.sinks and steps.retire_batches and steps.changes
        assert not steps.discard_abandoned  # tonight's own walk does that
        assert steps.not_ours == NOT_OURS

    @pytest.mark.parametrize("start", [Start.FRESH, Start.RESUMED])
    def test_a_batch_has_no_change_set_no_handoff_and_retires_nothing(self, start: Start) -> None:
        steps = plan_tail(start, "publishing", batch=True)
        assert steps.sinks and not steps.changes and not steps.hand_off
        assert not steps.retire_batches and not steps.discard_abandoned
        assert steps.seal is (start is Start.FRESH)
        assert steps.publish_sealed is (start is Start.RESUMED)
        assert steps.not_ours == RESUMED_BATCH_NOT_OURS

    def test_the_texts_name_what_is_not_this_runs(self) -> None:
        """The texts users have always seen when another run replaced the published one."""
        assert RESUMED_NOT_OURS.format(published="snapshot_date=D") == (
            "snapshot_date=D is not this run's snapshot any more; export again"
        )
        assert RESUMED_BATCH_NOT_OURS.format(published="b") == "b is not this run's batch any more"
        assert NOT_OURS == "the published snapshot is not this run's any more; export again"
