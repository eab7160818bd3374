"""The sources of entity tables, one module each (``paper``, ``packaged``, ``live``): each registers a builder per
dataset with :func:`worldprobe.datasets.builder.register_builder`, and a builder only produces rows; the build path
(drops, inputs, split, limit, report) is :mod:`worldprobe.datasets.builder`."""
