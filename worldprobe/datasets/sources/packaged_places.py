"""Packaged-data builders for the places datasets."""
