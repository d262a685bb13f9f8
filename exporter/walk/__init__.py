"""The walk of a catalog: the pure cursor merge (state() -> JSON) and the walker that drives it."""
