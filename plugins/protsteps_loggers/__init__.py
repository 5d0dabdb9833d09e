"""The built-in plugin ``loggers``: training callbacks that write what pretrain logs.

- ``csv`` (on by default): ``RUNDIR/metrics.csv``, one row per ``metrics.jsonl`` record;
- ``tensorboard``: event files under ``RUNDIR/tensorboard`` (needs the extra
  ``protsteps[tensorboard]``).

Selected in ``[train] callbacks``; registered through the hook ``protsteps_register_callbacks``
like a plugin's.
"""
