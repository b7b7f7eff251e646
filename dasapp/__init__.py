"""The application layer both command-line tools share, over the ``das`` sampler library.

* :mod:`dasapp.factory`: names in a config -> objects (model families, prompt lists, rewards,
  sampler settings), and paths relative to the repository;
* :mod:`dasapp.config_checks`: the checks of the config sections both tools share;
* :mod:`dasapp.config_cli`: ``--config file.py:variant`` and ``--config.<field>=<value>``;
* :mod:`dasapp.run_dirs`: run directories (marker, lock, safe overwrite and removal);
* :mod:`dasapp.stopping`: SIGINT/SIGTERM as a clean stop;
* :mod:`dasapp.offline`, :mod:`dasapp.realign_sweep`, :mod:`dasapp.cli`: ``python -m das``
  (also ``python -m dasapp``), offline DAS sampling and DeRaDiff's λ sweep.

The example package ``world`` plugs in above the library: its prompt list is a registration in
:mod:`dasapp.factory` (and its featurizer one in :mod:`online.builders`), imported only when
used; ``das`` imports nothing from this package or from ``world``.
"""
