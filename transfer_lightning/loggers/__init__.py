"""Lightning loggers from the ``logger`` config group (conf/logger/), and what each of them receives.

- ``nodes``: the group's named nodes (no Lightning import: the command line's first-second checks use it);
- ``build``: the nodes as Lightning loggers, server-side runs named and continued on resume;
- ``sinks`` / ``publish``: hyperparameters, figures, files and tags for every kind of logger;
- ``mlflow_runs``: MLflow runs, parent and child runs of a group of jobs, export artifacts;
- ``sweep``: a sweep's parent run and its jobs' run names;
- ``epoch_csv``: ``logger=csv``, one row per epoch;
- ``record``: the folder's ``logger_runs.json``.
"""
