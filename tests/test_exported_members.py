"""The package's public surface: what `exporter.__all__` lists, sorted, and importable."""

import exporter


def test_all_is_sorted_and_importable() -> None:
    """`__all__` is sorted and every name in it exists."""
    assert exporter.__all__ == sorted(exporter.__all__)
    for name in exporter.__all__:
        assert getattr(exporter, name) is not None


def test_public_errors_carry_distinct_exit_codes() -> None:
    """Each documented failure class maps to its own exit code (the README's table)."""
    codes = {
        exporter.ConfigError: 2,
        exporter.AuthError: 3,
        exporter.FetchError: 4,
        exporter.SinkError: 5,
        exporter.SchemaContractError: 6,
        exporter.IntegrityError: 7,
        exporter.ConcurrentRunError: 8,
        exporter.Interrupted: 130,
    }
    assert {cls: cls.exit_code for cls in codes} == codes
