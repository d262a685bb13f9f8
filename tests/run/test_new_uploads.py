"""The pure plan of a batch of new uploads: watermark, cutoff, stop rule, de-duplication."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from exporter.api.pagination import Page
from exporter.run.new_uploads import BatchPlan, BatchWalk, plan_batch, watermark
from exporter.snapshot.manifest import Manifest

W = dt.datetime(2026, 1, 2, 12, 0, tzinfo=dt.UTC)


def image(image_id: str, seconds_before_w: float) -> dict[str, Any]:
    moment = W - dt.timedelta(seconds=seconds_before_w)
    return {"id": image_id, "uploaded": moment.isoformat().replace("+00:00", "Z")}


def manifest(date: str, newest: dt.datetime | None, batch: str | None = None) -> Manifest:
    data: dict[str, Any] = {
        "snapshot_date": date,
        "started_at": "2026-01-02T00:00:00Z",
        "finished_at": "2026-01-02T00:01:00Z",
        "uploaded": {"min": None, "max": newest.isoformat() if newest else None},
    }
    if batch is not None:
        plan = {"base_snapshot": date, "watermark": "", "lag_s": 60, "cutoff": ""}
        data["new_uploads"] = {**plan, "batch": batch}
    return Manifest.from_json(data)


class TestPlan:
    def test_watermark_is_the_newest_of_the_snapshot_and_its_batches(self) -> None:
        """W is the newest `uploaded` over D and every batch of D, whichever holds it."""
        later = W + dt.timedelta(minutes=5)
        plan = plan_batch(manifest("2026-01-02", W), [manifest("2026-01-02", later, "b1")], 600)
        assert plan.watermark == later
        assert plan.cutoff == later - dt.timedelta(seconds=600)
        assert plan.batches == ("b1",)
        assert watermark([manifest("d", None)]) is None

    def test_an_empty_snapshot_takes_every_image(self) -> None:
        """With no image in D, the cutoff is the epoch: every listed image is new."""
        plan = plan_batch(manifest("2026-01-02", None), [], 600)
        assert plan.cutoff == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

    def test_the_plan_round_trips_through_its_description(self) -> None:
        """A checkpoint keeps the plan, so a resumed batch uses the same cutoff."""
        plan = BatchPlan("2026-01-02", W, 30.5, ("a", "b"))
        assert BatchPlan.from_dict(plan.describe()) == plan


class TestBatchWalk:
    def walk(self, known: set[str] = frozenset()) -> BatchWalk:  # type: ignore[assignment]
        return BatchWalk(BatchPlan("2026-01-02", W, 60), set(known))

    def test_stops_at_the_first_page_past_the_cutoff_keeping_its_new_images(self) -> None:
        """A page whose last image is before W - lag ends the walk; its newer images count."""
        walk = self.walk()
        first = walk.feed(Page([image("a", -10), image("b", 0)], "t1"))
        assert [i["id"] for i in first] == ["a", "b"] and not walk.done
        second = walk.feed(Page([image("c", 60), image("d", 61), image("e", 3000)], "t2"))
        assert [i["id"] for i in second] == ["c"]  # exactly W - lag is taken
        assert walk.done

    def test_ties_on_the_watermark_in_any_order_are_all_taken_once(self) -> None:
        """Whatever the order inside one instant, every new id on it is taken; known ids not."""
        walk = self.walk(known={"old"})
        ids = ["t3", "old", "t1", "t2"]
        pages = [Page([image(i, 0)], f"k{n}") for n, i in enumerate(ids)]
        taken = [i["id"] for page in pages for i in walk.feed(page)]
        assert sorted(taken) == ["t1", "t2", "t3"]
        assert not walk.done  # no image before the cutoff yet: the walk goes on

    def test_a_repeated_id_is_dropped_and_counted(self) -> None:
        """A cursor serving an id twice never yields it twice."""
        walk = self.walk()
        walk.feed(Page([image("a", 0), image("b", 1)], "t"))
        again = walk.feed(Page([image("b", 1), image("c", 2)], "u"))
        assert [i["id"] for i in again] == ["c"] and walk.repeats == 1

    def test_the_last_page_ends_the_walk(self) -> None:
        """A null token ends it, whatever the instants."""
        walk = self.walk()
        walk.feed(Page([image("a", 0)], None))
        assert walk.done

    @pytest.mark.parametrize("stop_after", [0, 1])
    def test_state_resumes_the_cursor_and_the_ids_taken(self, stop_after: int) -> None:
        """From `state()`, a resumed walk continues after its token and never re-takes an id."""
        walk = self.walk()
        pages = [Page([image("a", 0), image("b", 1)], "t1"), Page([image("b", 1)], "t2")]
        for page in pages[: stop_after + 1]:
            walk.feed(page)
        resumed = BatchWalk.from_state(walk.state(), known=set())
        assert resumed.token == walk.token and resumed.plan == walk.plan
        assert resumed.feed(Page([image("a", 0), image("z", 2)], None)) == [image("z", 2)]
