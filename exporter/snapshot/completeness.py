"""The completeness warning: the API's image count against the rows a walk exported.

`/stats` may count images a listing never shows (drafts, DESIGN "What the API leaves
unsaid"), and uploads and deletions during a walk may or may not be exported: a difference is
a warning, never a failure. Its words say which it can be, and that nothing the snapshot
promises is missing (every image that existed for the whole walk is in it, DESIGN "Live
catalogs"). The count is asked before the walk and, when the rows differ from it, once more
after: a count that moved is the catalog changing; a count that did not is first of all images
no listing shows, though uploads and deletions that cancel out leave it still too.
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
            f"{rows} images were exported and the API counted {before} both before and after "
            "the walk: the difference is images no listing shows (such as drafts) or uploads "
            "and deletions during the walk that left the count unchanged, and no image that "
            "existed for the whole walk is missing"
        )
    return (
        f"the API counted {before} images when the walk began and {after} when it ended, and "
        f"{rows} were exported (uploads and deletions during the walk account for a difference)"
    )
