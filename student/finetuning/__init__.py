"""Fine-tuning on a GLUE task (`pipeline finetune`): ``config`` (FinetuneConfig) -> ``loop``
(finetune) over ``data`` (a task cache's examples), with ``head`` (the task model), ``optim``,
``metrics`` and ``outputs`` beside it. Importing this package loads nothing heavy.
"""
