"""Tasks on top of stage one: task corpora (GLUE presets, own task files and datasets),
teacher fine-tuning, logits, augmentation, and the `evaluate` comparison.

    from pipeline import EmbedConfig
    from pipeline.tasks import TaskOptions, embed_task
    from pipeline.tasks.corpus import load_task_corpus   # a task in memory, checked

Sources: glue.py (GLUE's TSVs or hub dataset), own.py (task:PATH folders, --train files,
task:hf: datasets; tables.py reads the files, define.py makes them a task), convert.py
(TREC, MR, SUBJ, SICK into task folders).
"""

from pipeline.tasks.corpus import TaskOptions, embed_corpus, embed_task, is_task_corpus
from pipeline.tasks.own import TaskDataOptions

__all__ = ["TaskDataOptions", "TaskOptions", "embed_corpus", "embed_task", "is_task_corpus"]
