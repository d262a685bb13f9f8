"""Change data between two nights: the diff (DuckDB over both nights' files) and the change set
it publishes.
"""
