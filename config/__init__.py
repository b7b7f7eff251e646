"""Config files: one per method (``config/<METHOD>_smc.py``) for the online loop, one per model
family for ``python -m das``.

Each is read with ``--config config/<file>.py:<variant>``; the shared settings live in
:mod:`config.online_base` (with the table of methods) and :mod:`config.sd`.
"""
