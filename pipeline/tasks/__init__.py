"""Tasks on top of stage one: task corpora (GLUE), teacher fine-tuning, logits, augmentation,
and the `evaluate` comparison.

    from pipeline import EmbedConfig
    from pipeline.tasks import TaskOptions, embed_task
"""

from pipeline.tasks.corpus import TaskOptions, embed_corpus, embed_task, is_task_corpus

__all__ = ["TaskOptions", "embed_corpus", "embed_task", "is_task_corpus"]
