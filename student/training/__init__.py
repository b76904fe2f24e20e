"""Distillation (`pipeline train`): ``config`` (TrainConfig) -> ``loop`` (train) over ``data``
and ``objectives``, with ``validation``, ``state`` (checkpoints), ``meter``, ``dist`` and
``report`` beside it. Importing this package loads nothing heavy; ``train`` is in ``loop``.
"""
