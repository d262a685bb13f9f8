"""Image dicts to Arrow: the pure normalizer and the column plan it follows."""
