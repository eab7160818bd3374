"""Packaged-data builders for the time datasets."""
