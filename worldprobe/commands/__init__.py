"""The command layer: each module adds its commands to the ``worldprobe`` app (``register(app)``, called by
``worldprobe/cli.py``). Commands sit above every stage: they parse options, run stages in order (``probe
--control random_init`` extracts the twins, then probes) and print; the work is in the stages."""
