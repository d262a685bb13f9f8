"""The completeness warning: the API's image count against the rows a walk exported.

`/stats` may count images a listing never shows (drafts, DESIGN "What the API leaves
unsaid"), and uploads and deletions during a walk may or may not be exported: a difference is
a warning, never a failure. Its words say which it can be. The count is asked before the walk
and, when the rows differ from it, once more after: a count that moved is the catalog
changing; a count that did not, with rows that differ, is something the walk cannot explain.
"""

from __future__ import annotations


def count_warning(before: int | None, after: int | None, rows: int) -> str | None:
    """Return the warning for `rows` exported against the API's counts, or None when they
    agree (or there is no count to compare with)."""
    if before is None or before == rows:
        return None
    if after is None:
        return (
            f"the API counted {before} images when the walk began and {rows} were exported "
            "(uploads and deletions during the walk may account for a difference)"
        )
    if after == before:
        return (
            f"the API counted {before} images before and after the walk and {rows} were "
            "exported; the count did not change, so the walk cannot explain the difference "
            "(the API's count may include images no listing shows, such as drafts)"
        )
    return (
        f"the API counted {before} images when the walk began and {after} when it ended, and "
        f"{rows} were exported (uploads and deletions during the walk account for a difference)"
    )
