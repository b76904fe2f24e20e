"""Transfer-set augmentation for task-specific distillation (Tang et al., 2019, section 3.3).

Each training example yields up to ``copies`` variants, which the fine-tuned teacher labels
in stage one (its logits go into the cache) and the student learns from. Per word, with
probability ``p_mask`` it becomes the teacher's mask token; else with probability
``p_replace`` it is replaced by a similar word; then, with probability ``p_ngram``, the
variant is cut down to a random n-gram (n from 1 to 5). A variant equal to its source is
dropped, so a short example may yield fewer.

Replacement: Tang et al. swap a word for a random word of the same part of speech, which
needs a tagger model (a download). We use a substitute that needs nothing beyond the teacher:
one of the word's 10 nearest neighbours, by cosine, among the whole-word entries of the
teacher's own input-embedding matrix. Neighbours there share part of speech far more often
than not (``good`` -> ``great``, ``bad``, ``nice``), and like the original rule they may flip
the label, which is the point: the teacher relabels every variant.

Everything is deterministic given ``seed``: example i's variants come from a generator seeded
with ``(seed, i)``, so they do not depend on batching or on the other examples.

N-gram sampling keeps a piece of one text; on a sentence pair that breaks the pair, so pair
tasks take only ``mask`` and ``replace`` (applied to each side independently).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from cache.errors import SraError
from cache.options import option
from cache.tasks import TaskSpec
from pipeline.tasks.examples import Example

MODES = ("mask", "replace", "ngram")
SINGLE_ONLY = ("ngram",)


@dataclass(frozen=True)
class AugmentConfig:
    """How many augmented variants of each training example, and how they are made."""

    copies: int = option(
        0,
        "Task corpora: augmented variants per training example (Tang et al. 2019).",
        flag="augment",
    )
    modes: tuple[str, ...] | None = option(
        None,
        "Comma list of mask, replace, ngram (default: all that suit the task).",
        flag="augment-modes",
    )
    # Tang et al. 2019's probabilities, section 3.3.
    p_mask: float = option(
        0.1, "Per word: chance it becomes the mask token.", flag="augment-p-mask"
    )
    p_replace: float = option(
        0.1, "Per word: chance it becomes a nearby word.", flag="augment-p-replace"
    )
    p_ngram: float = option(
        0.25, "Per variant: chance it is cut to an n-gram.", flag="augment-p-ngram"
    )
    max_ngram: int = option(5, "Longest n-gram kept.", flag="augment-max-ngram")
    neighbours: int = option(
        10, "Nearest embedding neighbours a replacement is drawn from.", flag="augment-neighbours"
    )
    seed: int = option(0, "Seed of the augmentation.", flag="augment-seed")

    def resolved_modes(self, task: TaskSpec) -> tuple[str, ...]:
        """The modes to apply; a mode that does not suit the task is an error, not a skip."""
        if self.modes is None:
            return tuple(m for m in MODES if not (task.pair and m in SINGLE_ONLY))
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise SraError(
                f"unknown augmentation mode {', '.join(bad) or '(none)'}; choose from "
                f"{', '.join(MODES)}"
            )
        wrong = [m for m in self.modes if task.pair and m in SINGLE_ONLY]
        if wrong:
            raise SraError(
                f"augmentation mode {wrong[0]} keeps a piece of one sentence and only suits "
                f"single-sentence tasks, but {task.name} is a sentence-pair task: use "
                "--augment-modes mask,replace"
            )
        return tuple(dict.fromkeys(self.modes))

    def check(self, task: TaskSpec) -> None:
        if self.copies < 0 or self.max_ngram < 1 or self.neighbours < 1:
            raise SraError("--augment must be >= 0 (and n-gram length, neighbours >= 1)")
        for name in ("p_mask", "p_replace", "p_ngram"):
            if not 0 <= getattr(self, name) <= 1:
                raise SraError(f"augmentation {name} must be in [0, 1]")
        if self.p_mask + self.p_replace > 1:
            raise SraError("augmentation p_mask + p_replace must not exceed 1")
        self.resolved_modes(task)

    def describe(self, task: TaskSpec) -> dict[str, Any]:
        return asdict(self) | {"modes": list(self.resolved_modes(task)), "replace": "embedding-nn"}


class Neighbours:
    """For each word of a corpus that is a whole-word vocabulary entry, its nearest whole-word
    entries in the teacher's input-embedding space."""

    def __init__(
        self,
        vocab: dict[str, int],
        embeddings: np.ndarray,
        words: Iterable[str],
        k: int = 10,
        special: Sequence[int] = (),
    ) -> None:
        skip = set(special)
        pool = sorted(
            (i, w) for w, i in vocab.items() if w.isalpha() and len(w) > 1 and i not in skip
        )
        pool_ids = np.array([i for i, _ in pool], dtype=np.int64)
        self.pool_words = [w for _, w in pool]
        position = {w: p for p, w in enumerate(self.pool_words)}
        wanted = sorted({w.lower() for w in words} & position.keys())
        self.table: dict[str, np.ndarray] = {}
        if not wanted or len(pool) < 2:
            return
        unit = embeddings[pool_ids].astype(np.float32)
        unit /= np.linalg.norm(unit, axis=1, keepdims=True).clip(min=1e-8)
        k = min(k, len(pool) - 1)
        for start in range(0, len(wanted), 2048):
            chunk = wanted[start : start + 2048]
            rows = np.array([position[w] for w in chunk])
            sims = unit[rows] @ unit.T
            sims[np.arange(len(rows)), rows] = -np.inf  # a word is not its own neighbour
            top = np.argpartition(-sims, k, axis=1)[:, :k]
            for w, best in zip(chunk, top, strict=True):
                self.table[w] = best

    def pick(self, word: str, rng: np.random.Generator) -> str | None:
        best = self.table.get(word.lower())
        if best is None:
            return None
        return self.pool_words[int(best[rng.integers(len(best))])]


def augment_examples(
    examples: Sequence[Example],
    task: TaskSpec,
    cfg: AugmentConfig,
    neighbours: Neighbours | None,
    mask_token: str,
) -> list[Example]:
    """Up to ``cfg.copies`` unlabelled variants of each example, in example order."""
    modes = cfg.resolved_modes(task)
    out: list[Example] = []
    for i, ex in enumerate(examples):
        rng = np.random.default_rng([cfg.seed, i])
        # Variants are rejoined on single spaces; so is the source they must differ from
        # (SST-2's texts end in a space: without this every variant would count as new).
        source = (_words(ex.text_a), None if ex.text_b is None else _words(ex.text_b))
        for _ in range(cfg.copies):
            a = _variant(ex.text_a, modes, cfg, neighbours, mask_token, rng)
            b = None
            if ex.text_b is not None:
                b = _variant(ex.text_b, modes, cfg, neighbours, mask_token, rng)
            if (a, b) != source:
                out.append(Example(ex.idx, a, b, None))
    return out


def _words(text: str) -> str:
    return " ".join(text.split())


def _variant(
    text: str,
    modes: tuple[str, ...],
    cfg: AugmentConfig,
    neighbours: Neighbours | None,
    mask_token: str,
    rng: np.random.Generator,
) -> str:
    p_mask = cfg.p_mask if "mask" in modes else 0.0
    p_replace = cfg.p_replace if "replace" in modes and neighbours is not None else 0.0
    words = text.split()
    draws = rng.random(len(words))
    out = []
    for word, x in zip(words, draws, strict=True):
        if x < p_mask:
            out.append(mask_token)
        elif x < p_mask + p_replace:
            out.append((neighbours.pick(word, rng) if neighbours else None) or word)
        else:
            out.append(word)
    if "ngram" in modes and len(out) > 1 and rng.random() < cfg.p_ngram:
        n = int(rng.integers(1, min(cfg.max_ngram, len(out) - 1) + 1))
        start = int(rng.integers(0, len(out) - n + 1))
        out = out[start : start + n]
    return " ".join(out)
