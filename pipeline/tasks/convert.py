"""Convert common sentence-classification datasets, as distributed, into task folders.

TREC, MR, SUBJ and SICK come in their own layouts (a label prefix per line, one file per
class, a TSV with extra columns); ``pipeline embed --corpus task:PATH`` reads a task folder
(``train``/``dev``/``test`` files with ``text``, ``text_pair``, ``label`` columns). This
module is that step, one plain function per dataset::

    python -m pipeline.tasks.convert trec ../shared/data/tasks/TREC data/trec
    python -m pipeline.tasks.convert sick-r ../shared/data/tasks/SICK data/sick-r

Split policy (seeded and stratified with ``define.carve``, the same carving that gives a task
without a dev split its dev split; ``--seed``, default 0):

* ``trec``: ``train_5500.label*`` -> train and dev (10% of it, stratified by coarse class);
  ``TREC_10.label`` -> test. Labels are the 6 coarse classes (the part before ``:``).
* ``mr``, ``subj``: the two one-class files pooled (negative/objective first) -> test (10%),
  dev (10%) and train (80%), each stratified by class. Labels ``negative``/``positive``,
  ``objective``/``subjective``.
* ``sick-e``, ``sick-r``: ``SICK_train.txt`` -> train, ``SICK_trial.txt`` -> dev (there is
  no test file); sentence pairs. ``sick-e``: the entailment judgment, lower-cased
  (``contradiction``, ``entailment``, ``neutral``); ``sick-r``: the relatedness score as
  written (1 to 5), which the task reader infers to be a regression.

Texts are kept as written but for surrounding whitespace (MR and SUBJ lines end in a space).
Output is TSV (``train.tsv``, ...), written to a temporary folder beside OUT and renamed into
place, so OUT is complete or absent.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from cache.errors import SraError
from pipeline.tasks.define import carve

Row = dict[str, str]
DEV_FRACTION = 0.1
TEST_FRACTION = 0.1


# ---------------------------------------------------------------------------- datasets


def trec(src: Path, seed: int = 0) -> dict[str, list[Row]]:
    """TREC question types (Li & Roth 2002), coarse classes."""
    train = _trec_rows(_one(src, "train_5500.label*"))
    test = _trec_rows(_one(src, "TREC_10.label*"))
    kept, dev = carve([r["label"] for r in train], DEV_FRACTION, seed)
    return {"train": [train[i] for i in kept], "dev": [train[i] for i in dev], "test": test}


def mr(src: Path, seed: int = 0) -> dict[str, list[Row]]:
    """Movie-review polarity (Pang & Lee 2005): rt-polarity.neg / rt-polarity.pos."""
    rows = _class_rows(src, {"negative": "rt-polarity.neg", "positive": "rt-polarity.pos"})
    return _three_way(rows, seed)


def subj(src: Path, seed: int = 0) -> dict[str, list[Row]]:
    """Subjectivity (Pang & Lee 2004): subj.objective / subj.subjective."""
    rows = _class_rows(src, {"objective": "subj.objective", "subjective": "subj.subjective"})
    return _three_way(rows, seed)


def sick_e(src: Path, seed: int = 0) -> dict[str, list[Row]]:
    """SICK entailment (SemEval-2014 task 1): pairs, 3 classes."""
    return {
        split: [{**pair, "label": judgment.lower()} for pair, judgment, _ in _sick_rows(path)]
        for split, path in _sick_files(src).items()
    }


def sick_r(src: Path, seed: int = 0) -> dict[str, list[Row]]:
    """SICK relatedness (SemEval-2014 task 1): pairs, a score from 1 to 5."""
    return {
        split: [{**pair, "label": score} for pair, _, score in _sick_rows(path)]
        for split, path in _sick_files(src).items()
    }


DATASETS: dict[str, Callable[[Path, int], dict[str, list[Row]]]] = {
    "trec": trec,
    "mr": mr,
    "subj": subj,
    "sick-e": sick_e,
    "sick-r": sick_r,
}


def convert(dataset: str, src: Path, out: Path, seed: int = 0, overwrite: bool = False) -> dict:
    """Convert ``dataset`` from ``src`` into the task folder ``out``; returns rows per split."""
    if dataset not in DATASETS:
        raise SraError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if not src.is_dir():
        raise SraError(f"{src} is not a folder; pass the folder holding the {dataset} files")
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise SraError(f"{out} exists and is not empty; choose another folder or --overwrite")
    splits = DATASETS[dataset](src, seed)
    write_task_folder(out, splits)
    return {split: len(rows) for split, rows in splits.items()}


# ---------------------------------------------------------------------------- reading


def _one(src: Path, pattern: str) -> Path:
    found = sorted(src.glob(pattern))
    if len(found) != 1:
        what = "no file" if not found else f"{len(found)} files"
        raise SraError(f"{src} has {what} matching {pattern}; pass the dataset's own folder")
    return found[0]


def _lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) of each non-blank line, decoded strictly as UTF-8."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise SraError(f"{path}:{line}: bytes that are not UTF-8") from None
    return [(n, line.rstrip("\r")) for n, line in enumerate(text.split("\n"), 1) if line.strip()]


def _trec_rows(path: Path) -> list[Row]:
    rows = []
    for number, line in _lines(path):
        label, _, text = line.partition(" ")
        coarse, colon, fine = label.partition(":")
        if not (colon and coarse and fine and text.strip()):
            raise SraError(f"{path}:{number}: not a TREC line ('COARSE:fine question ...')")
        rows.append({"text": text.strip(), "label": coarse})
    return rows


def _class_rows(src: Path, files: dict[str, str]) -> list[Row]:
    rows = []
    for label, name in files.items():
        path = src / name
        if not path.is_file():
            raise SraError(f"{src} has no {name}; pass the dataset's own folder")
        rows += [{"text": line.strip(), "label": label} for _, line in _lines(path)]
    return rows


def _three_way(rows: list[Row], seed: int) -> dict[str, list[Row]]:
    """Stratified test, dev and train shares (TEST_FRACTION, DEV_FRACTION of all rows)."""
    rest, test = carve([r["label"] for r in rows], TEST_FRACTION, seed)
    kept = [rows[i] for i in rest]
    train, dev = carve([r["label"] for r in kept], DEV_FRACTION / (1 - TEST_FRACTION), seed + 1)
    return {
        "train": [kept[i] for i in train],
        "dev": [kept[i] for i in dev],
        "test": [rows[i] for i in test],
    }


_SICK_COLUMNS = ("sentence_A", "sentence_B", "relatedness_score", "entailment_judgment")


def _sick_files(src: Path) -> dict[str, Path]:
    return {"train": _one(src, "SICK_train.txt"), "dev": _one(src, "SICK_trial.txt")}


def _sick_rows(path: Path) -> list[tuple[Row, str, str]]:
    """(the pair, its entailment judgment, its relatedness score) per row."""
    lines = _lines(path)
    header = lines[0][1].split("\t") if lines else []
    missing = [c for c in _SICK_COLUMNS if c not in header]
    if missing:
        raise SraError(f"{path}:1: header lacks {', '.join(missing)} (it has: {', '.join(header)})")
    at = {c: header.index(c) for c in _SICK_COLUMNS}
    rows = []
    for number, line in lines[1:]:
        fields = line.split("\t")
        if len(fields) != len(header):
            raise SraError(f"{path}:{number}: {len(fields)} fields, the header has {len(header)}")
        pair = {"text": fields[at["sentence_A"]], "text_pair": fields[at["sentence_B"]]}
        rows.append((pair, fields[at["entailment_judgment"]], fields[at["relatedness_score"]]))
    return rows


# ---------------------------------------------------------------------------- writing


def write_task_folder(out: Path, splits: dict[str, list[Row]]) -> None:
    """``out/SPLIT.tsv`` per split (header: the rows' keys), all or nothing."""
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for split, rows in splits.items():
            columns = list(rows[0])
            lines = ["\t".join(columns)]
            for row in rows:
                values = [row[c] for c in columns]
                if any("\t" in v or "\n" in v for v in values):
                    raise SraError(f"a {split} text holds a tab or line break: {values}")
                lines.append("\t".join(values))
            (tmp / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.tasks.convert",
        description="Convert TREC, MR, SUBJ or SICK into a task folder for --corpus task:PATH.",
    )
    parser.add_argument("dataset", choices=list(DATASETS))
    parser.add_argument("src", type=Path, help="the dataset's folder, as distributed")
    parser.add_argument("out", type=Path, help="the task folder to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT")
    args = parser.parse_args(argv)
    try:
        counts = convert(args.dataset, args.src, args.out, args.seed, args.overwrite)
    except SraError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.out}: " + " / ".join(f"{n:,} {split}" for split, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
