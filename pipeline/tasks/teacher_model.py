"""The teacher as a sequence classifier, for `pipeline teacher-finetune`: loaded with a head
for the task, the task's examples encoded once (pairs jointly, as BERT reads them), scored,
and saved as a standard Hugging Face model folder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cache.errors import SraError
from cache.files import fsync_dir
from cache.tasks import TaskSpec
from pipeline.tasks.examples import Example
from student.finetuning.data import length_batches
from student.finetuning.metrics import task_scores
from student.runtime import autocast


class Encoded:
    """One split tokenized once: pairs jointly (``[CLS] a [SEP] b [SEP]``), as BERT reads them."""

    def __init__(self, tokenizer: Any, examples: list[Example], task: TaskSpec, max_length: int):
        first = [e.text_a for e in examples]
        second = [e.text_b or "" for e in examples] if task.pair else None
        enc = tokenizer(first, second, truncation=True, max_length=max_length)
        self.ids: list[list[int]] = enc["input_ids"]
        self.types: list[list[int]] = enc.get("token_type_ids") or [[0] * len(x) for x in self.ids]
        self.lengths = np.array([len(x) for x in self.ids])
        self.labels = example_targets(examples, task)
        self.pad_id = int(tokenizer.pad_token_id or 0)

    def __len__(self) -> int:
        return len(self.ids)

    def batches(self, size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
        """Length-bucketed batches, shuffled with ``rng`` (as the student's fine-tuning)."""
        return list(length_batches(self.lengths, size, rng))

    def inputs(
        self, rows: np.ndarray, device: torch.device, labels: bool
    ) -> dict[str, torch.Tensor]:
        longest = int(self.lengths[rows].max())
        ids = np.full((len(rows), longest), self.pad_id, np.int64)
        types = np.zeros((len(rows), longest), np.int64)
        mask = np.zeros((len(rows), longest), np.int64)
        for r, i in enumerate(rows):
            n = self.lengths[i]
            ids[r, :n], types[r, :n], mask[r, :n] = self.ids[i], self.types[i], 1
        out = {
            "input_ids": torch.from_numpy(ids).to(device),
            "token_type_ids": torch.from_numpy(types).to(device),
            "attention_mask": torch.from_numpy(mask).to(device),
        }
        if labels:
            out["labels"] = torch.from_numpy(self.labels[rows]).to(device)
        return out


def example_targets(examples: list[Example], task: TaskSpec) -> np.ndarray:
    """What the classifier's loss compares with, by problem: class indices (int64, -1
    withheld), raw scores (float32; the teacher learns the task's own scale) or multi-hot rows
    (float32 ``[n, labels]``, as BCE-with-logits takes them; -1 rows withheld)."""
    if task.is_multilabel:
        hot = np.zeros((len(examples), task.num_labels), np.float32)
        for row, e in enumerate(examples):
            if e.label is None:
                hot[row] = -1
            else:
                hot[row, list(e.label)] = 1  # type: ignore[arg-type]
        return hot
    dtype = np.float32 if task.is_regression else np.int64
    return np.array([e.label if e.label is not None else -1 for e in examples], dtype)


def logit_predictions(task: TaskSpec, logits: np.ndarray) -> np.ndarray:
    """A classifier's outputs read as predictions: the score (regression), the multi-hot rows
    of labels whose logit is positive (multilabel), else the top class."""
    if task.is_regression:
        return logits[:, 0]
    if task.is_multilabel:
        return (logits > 0).astype(np.int8)
    return logits.argmax(-1)


def score(
    model: Any, data: Encoded, task: TaskSpec, device: torch.device, bf16: bool
) -> tuple[dict[str, float], np.ndarray]:
    was_training = model.training
    model.eval()
    logits = np.empty((len(data), task.num_labels), np.float32)
    with torch.inference_mode():
        for rows in data.batches(128, None):
            with autocast(device, bf16):
                outputs = model(**data.inputs(rows, device, labels=False))
                logits[rows] = outputs.logits.float().cpu()
    model.train(was_training)
    gold = data.labels.astype(np.int8) if task.is_multilabel else data.labels
    return task_scores(task, logit_predictions(task, logits), gold), logits


# ---------------------------------------------------------------------------- the model


def load_model(
    teacher: str | None, task: TaskSpec, trust_remote_code: bool = False
) -> tuple[Any, Any]:
    """The encoder plus a fresh head sized for the task: one output per class or label, or
    one for regression, with the transformers ``problem_type`` that picks its loss."""
    import transformers
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from pipeline.tasks.logits import PROBLEM_TYPES
    from pipeline.teacher import check_encoder, load_error_message, resolve_teacher

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    name = teacher or "sentence-transformers/all-MiniLM-L6-v2"
    source = resolve_teacher(teacher)
    labels = list(task.labels) if task.labels is not None else ["score"]
    try:
        config = AutoConfig.from_pretrained(
            source,
            num_labels=task.num_labels,
            id2label=dict(enumerate(labels)),
            label2id={v: i for i, v in enumerate(labels)},
            problem_type=PROBLEM_TYPES[task.problem],
            trust_remote_code=trust_remote_code,
        )
        # A teacher already fine-tuned on another task is an intermediate-task start
        # (STILTs, Phang et al. 2018): its encoder is kept, its head is not (below).
        previous_task = getattr(config, "finetuning_task", None)
        # transformers 5 dropped the standard field; an extra attribute still round-trips
        # through config.json, and stage one reads it to tie the logits to their task.
        config.finetuning_task = task.name
        check_encoder(name, config)
        tokenizer = AutoTokenizer.from_pretrained(
            source, use_fast=True, trust_remote_code=trust_remote_code
        )
        # A head fine-tuned for another label set is replaced rather than refused: the encoder
        # is what we start from.
        model = AutoModelForSequenceClassification.from_pretrained(
            source,
            config=config,
            ignore_mismatched_sizes=True,
            trust_remote_code=trust_remote_code,
        )
    except (OSError, ValueError) as e:
        raise SraError(load_error_message(name, e)) from None
    if previous_task and previous_task != task.name:
        # Same label count, other meanings (MRPC's 1 is "equivalent", RTE's 0 "entailment"):
        # a head of the right size is still the wrong head.
        reset_head(model)
    return model, tokenizer


def reset_head(model: Any) -> None:
    """Re-initialise every module outside the encoder, as a fresh head would be (BERT's init)."""
    # Not model._init_weights: on a model from from_pretrained it skips the modules it loaded.
    std = getattr(model.config, "initializer_range", 0.02)
    with torch.no_grad():
        for name, module in model.named_modules():
            if not name or name.startswith(model.base_model_prefix):
                continue
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0.0, std)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, torch.nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()


def no_decay(name: str) -> bool:
    return name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name


def save_model(out: Path, model: Any, tokenizer: Any) -> None:
    """save_pretrained into a temporary folder, then each file renamed into ``out``."""
    tmp = out / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    fsync_dir(tmp)
    for f in sorted(tmp.iterdir()):
        f.replace(out / f.name)
    tmp.rmdir()
    fsync_dir(out)


def reload(out: Path, device: torch.device) -> Any:
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(out).to(device).eval()
