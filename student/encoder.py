"""A trained student as a sentence encoder: load, save and ``encode`` like sentence-transformers.

A student folder is flat and self-contained (local files only, never a hub lookup)::

    config.json         StudentConfig fields + {"format": "sra-student", "format_version": 1}
    model.safetensors   BiLSTMEncoder state dict
    tokenizer.json      the teacher's fast tokenizer (``tokenizers`` format)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from tokenizers import Tokenizer

from cache.errors import SraError
from cache.files import fsync_dir, write_file
from student.config import StudentConfig
from student.deploy.folder import is_export
from student.model import BiLSTMEncoder
from student.runtime import cpu_bf16_supported

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
FORMAT = "sra-student"
FORMAT_VERSION = 1

# After sorting by length, a run of at least this many equal-length sentences is encoded as
# its own batch: with no padding the LSTM can use the fast unpacked CPU kernel (see
# BiLSTMEncoder), which beats folding those sentences into a larger, packed, mixed batch.
_MIN_UNIFORM_BATCH = 32


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


_POOL_TOKENS = 4096


def plan_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Group indices into batches of similar length (longest first).

    Sentences are sorted by length; full batches are cut from each run of equal length and
    a leftover run of at least ``_MIN_UNIFORM_BATCH`` is its own (padding-free) batch.
    Smaller leftovers pool into mixed-length batches, padded to their longest member, so a
    pool is also cut when it would exceed ``_POOL_TOKENS`` padded tokens: long sentences in
    the tail would otherwise pad hundreds of short ones (`pipeline bench student` on 1,004
    Wikipedia sentences, docs/benchmarks.md: 2,149 sentences/s without the cap, 3,678 with).
    """
    if len(lengths) == 1:
        return [np.zeros(1, dtype=np.int64)]
    order = np.argsort(-lengths, kind="stable")
    sorted_lengths = lengths[order]
    runs = np.split(order, np.flatnonzero(np.diff(sorted_lengths)) + 1)
    batches: list[np.ndarray] = []
    pool: list[np.ndarray] = []
    pooled = 0
    for run in runs:
        while len(run) >= batch_size:
            batches.append(run[:batch_size])
            run = run[batch_size:]
        if len(run) >= _MIN_UNIFORM_BATCH:
            batches.append(run)
        elif len(run):
            if pool and (pooled + len(run)) * int(lengths[pool[0][0]]) > _POOL_TOKENS:
                batches.append(np.concatenate(pool))
                pool, pooled = [], 0
            pool.append(run)
            pooled += len(run)
            if pooled >= batch_size:
                merged = np.concatenate(pool)
                batches.append(merged[:batch_size])
                rest = merged[batch_size:]
                pool, pooled = ([rest] if len(rest) else []), len(rest)
    if pooled:
        batches.append(np.concatenate(pool))
    return batches


def encoding_tokenizer(tokenizer: Tokenizer, max_length: int) -> Tokenizer:
    """A private copy for encoding: our own truncation, and no tokenizer-side padding (we pad
    ourselves and need true lengths). Special tokens ([CLS] ... [SEP]) stay exactly as the
    tokenizer's post-processor adds them, as in the teacher's stored token ids."""
    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_padding()
    copy.enable_truncation(max_length=max_length)
    return copy


class StudentEncoder:
    """A BiLSTM student plus the teacher's tokenizer, encoding sentences to teacher-space vectors.

    ``StudentEncoder(config, model=None, tokenizer=...)`` builds one in memory (a fresh,
    untrained ``BiLSTMEncoder`` when ``model`` is None); ``tokenizer`` is a
    ``tokenizers.Tokenizer`` or the path of a ``tokenizer.json``. Usually you want
    ``StudentEncoder.from_pretrained(folder)`` instead.

    Attributes: ``config`` (StudentConfig), ``model`` (BiLSTMEncoder), ``tokenizer`` (the
    tokenizer exactly as given, which is what ``save_pretrained`` writes), ``backend``
    (``"torch"`` here; ``student.deploy`` has the ONNX Runtime ones).
    """

    backend = "torch"

    def __init__(
        self,
        config: StudentConfig,
        model: BiLSTMEncoder | None = None,
        *,
        tokenizer: Tokenizer | str | os.PathLike[str],
    ) -> None:
        if not isinstance(config, StudentConfig):
            raise TypeError(f"config must be a StudentConfig, got {type(config).__name__}")
        if model is None:
            model = BiLSTMEncoder(config)
        elif not isinstance(model, BiLSTMEncoder):
            raise TypeError(f"model must be a BiLSTMEncoder, got {type(model).__name__}")
        elif model.config != config:
            raise ValueError("model was built from a different StudentConfig than config")
        if isinstance(tokenizer, str | os.PathLike):
            tokenizer = Tokenizer.from_file(os.fspath(tokenizer))
        if not isinstance(tokenizer, Tokenizer):
            raise TypeError(
                "tokenizer must be a tokenizers.Tokenizer or a path, "
                f"got {type(tokenizer).__name__}"
            )
        size = tokenizer.get_vocab_size(with_added_tokens=True)
        if size > config.vocab_size:
            raise ValueError(
                f"the tokenizer has {size} tokens but config.vocab_size is {config.vocab_size}"
            )
        self.model = model
        self.tokenizer = tokenizer
        self._tokenizer = encoding_tokenizer(tokenizer, config.max_length)

    @property
    def config(self) -> StudentConfig:
        """The network's config (one copy, the model's, so changing one changes both)."""
        return self.model.config

    # ------------------------------------------------------------------ loading / saving

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike[str], backend: str | None = None
    ) -> StudentEncoder:
        """Load a student folder written by ``save_pretrained`` (local files only), or a folder
        written by ``pipeline export --format onnx``.

        ``backend``: None runs a student folder in torch and an exported folder on the runtime
        it was exported for; ``"onnx"`` / ``"onnx-int8"`` run a student folder through ONNX
        Runtime (fp32, or with int8 weights) without exporting it first. The result encodes
        with the same ``encode`` contract whatever the backend (``student.deploy``).

        Anything wrong with the folder raises ``SraError`` with one line naming the file.
        """
        folder = Path(path)
        if backend not in (None, "torch") or is_export(folder):
            from student.deploy.encoder import load_encoder

            return load_encoder(folder, backend)
        if not folder.is_dir():
            raise SraError(
                f"student folder {folder} does not exist or is not a folder: pass the folder "
                f"save_pretrained wrote (students load from local files only, never a hub)"
            )
        for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE):
            if not (folder / name).is_file():
                raise SraError(
                    f"{folder / name} is missing: a student folder needs {CONFIG_FILE}, "
                    f"{WEIGHTS_FILE} and {TOKENIZER_FILE}; re-save it with save_pretrained"
                )
        config = read_config(folder / CONFIG_FILE)
        tokenizer = read_tokenizer(folder / TOKENIZER_FILE, config)
        model = BiLSTMEncoder(config)
        _load_weights(model, folder / WEIGHTS_FILE)
        model.eval()
        return cls(config, model, tokenizer=tokenizer)

    def save_pretrained(self, path: str | os.PathLike[str]) -> None:
        """Write ``config.json``, ``model.safetensors`` and ``tokenizer.json`` into ``path``.

        Everything is serialised in memory first and written under temporary names that are
        then renamed into place: a new folder appears complete or not at all, and in an
        existing folder each file is replaced atomically (``config.json`` last).
        """
        folder = Path(path)
        if folder.exists() and not folder.is_dir():
            raise SraError(f"{folder} exists and is not a folder: choose another path")
        header = {"format": FORMAT, "format_version": FORMAT_VERSION}
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        payload = {
            WEIGHTS_FILE: safetensors.torch.save(state, metadata={"format": "pt"}),
            TOKENIZER_FILE: self.tokenizer.to_str(pretty=True).encode("utf-8"),
            CONFIG_FILE: (json.dumps({**header, **self.config.to_dict()}, indent=2) + "\n").encode(
                "utf-8"
            ),
        }
        tag = uuid.uuid4().hex[:12]
        folder.parent.mkdir(parents=True, exist_ok=True)
        if not folder.exists():
            staging = folder.parent / f".{folder.name}.{tag}.tmp"
            staging.mkdir()
            try:
                for name, data in payload.items():
                    write_file(staging / name, data)
                os.replace(staging, folder)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            fsync_dir(folder.parent)
            return
        staged: list[tuple[Path, Path]] = []
        try:
            for name, data in payload.items():
                temp = folder / f".{name}.{tag}.tmp"
                staged.append((temp, folder / name))
                write_file(temp, data)
            for temp, final in staged:  # dict order: config.json goes in last
                os.replace(temp, final)
        finally:
            for temp, _ in staged:
                with contextlib.suppress(FileNotFoundError):
                    temp.unlink()
        fsync_dir(folder)

    # ------------------------------------------------------------------ encoding

    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int = 256,
        show_progress_bar: bool = False,
        normalize: bool = False,
        device: str | None = None,
    ) -> np.ndarray:
        """Encode sentences to float32 vectors ``[n, output_dim]`` (``[output_dim]`` for a str).

        Sentences are tokenized with the saved tokenizer (truncated to ``config.max_length``,
        special tokens kept), sorted by length into batches, run in eval mode under
        ``torch.inference_mode()`` (bf16 autocast on CPUs with native bf16; fp32 elsewhere)
        and returned in the input order. ``normalize=True`` scales rows to unit L2 norm.
        ``device`` moves the model there first (and it stays there); None keeps its device.
        """
        single = isinstance(sentences, str)
        texts = [sentences] if single else list(sentences)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"sentence {i} is a {type(text).__name__}, not a str")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        dim = self.config.output_dim
        if not texts:
            return np.zeros((0, dim), dtype=np.float32)

        ids = [encoding.ids for encoding in self._tokenize(texts)]
        lengths = np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids))
        result = np.empty((len(texts), dim), dtype=np.float32)

        with self._runner(device) as run, self._progress(show_progress_bar) as advance:
            for batch in plan_batches(lengths, batch_size):
                batch_lengths = lengths[batch]
                padded = np.full(
                    (len(batch), int(batch_lengths.max())), self.config.pad_id, dtype=np.int64
                )
                for row, index in enumerate(batch):
                    padded[row, : batch_lengths[row]] = ids[index]
                result[batch] = run(padded, batch_lengths)
                advance(len(batch), len(texts))

        if normalize:
            norms = np.linalg.norm(result, axis=1, keepdims=True)
            result /= np.maximum(norms, np.float32(1e-12))
        return result[0] if single else result

    @contextlib.contextmanager
    def _runner(
        self, device: str | None
    ) -> Iterator[Callable[[np.ndarray, np.ndarray], np.ndarray]]:
        """Yields ``run(ids [B, T], lengths [B]) -> vectors [B, output_dim]`` (numpy in and out):
        the model in eval mode under ``torch.inference_mode()``, with bf16 autocast on CPUs
        with native bf16, its training mode restored afterwards. ``device`` moves the model
        there first. Other backends (``student.deploy``) run batches their own way here."""
        if device is not None:
            self.model.to(torch.device(device))
        model_device = self.model.embedding.weight.device
        autocast: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
        if model_device.type == "cpu" and cpu_bf16_supported():
            autocast = torch.autocast("cpu", dtype=torch.bfloat16)

        def run(padded: np.ndarray, lengths: np.ndarray) -> np.ndarray:
            ids = torch.from_numpy(padded).to(model_device)
            return self.model(ids, torch.from_numpy(lengths)).float().cpu().numpy()

        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), autocast:
                yield run
        finally:
            self.model.train(was_training)

    def _tokenize(self, texts: list[str]) -> list[Any]:
        try:
            if len(texts) == 1:  # one sentence (a latency-bound call): no batch machinery
                return [self._tokenizer.encode(texts[0])]
            return self._tokenizer.encode_batch(texts)
        except TypeError:
            # The tokenizer takes only text that encodes as UTF-8: name the item that does not
            # (a lone surrogate such as "\\ud800", from a bad decode upstream).
            for i, text in enumerate(texts):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as e:
                    raise SraError(
                        f"sentence {i} is not valid Unicode text (a lone surrogate "
                        f"{text[e.start]!r} at position {e.start}); fix or drop it"
                    ) from None
            raise

    @staticmethod
    @contextlib.contextmanager
    def _progress(enabled: bool) -> Iterator[object]:
        if not enabled:
            yield lambda done, total: None
            return
        from rich.progress import Progress

        with Progress(transient=True) as progress:
            task = progress.add_task("Encoding", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, advance=done, total=total)

            yield advance


def read_config(path: Path) -> StudentConfig:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SraError(
            f"{path} is not valid JSON ({_one_line(error)}): restore it or re-save the student"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SraError(
            f'{path} is not a student config (no "format": "{FORMAT}"): pass a folder written '
            f"by StudentEncoder.save_pretrained"
        )
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise SraError(
            f"{path} has format_version {version!r}, this code reads {FORMAT_VERSION}: "
            f"use the matching version of the student package"
        )
    fields = {k: v for k, v in data.items() if k not in ("format", "format_version")}
    try:
        return StudentConfig.from_dict(fields)
    except (ValueError, TypeError) as error:
        raise SraError(
            f"{path} is not a valid student config ({_one_line(error)}): fix the value or "
            f"re-save the student"
        ) from None


def read_tokenizer(path: Path, config: StudentConfig) -> Tokenizer:
    try:
        tokenizer = Tokenizer.from_file(os.fspath(path))
    except Exception as error:
        raise SraError(
            f"{path} is not a readable tokenizers file ({_one_line(error)[:200]}): copy the "
            f"teacher's tokenizer.json back into the student folder"
        ) from None
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if size > config.vocab_size:
        raise SraError(
            f"{path} has {size} tokens but config.json says vocab_size {config.vocab_size}: "
            f"the tokenizer belongs to another model; copy the teacher's tokenizer.json back"
        )
    return tokenizer


def _load_weights(model: BiLSTMEncoder, path: Path) -> None:
    try:
        tensors = safetensors.torch.load_file(os.fspath(path), device="cpu")
    except Exception as error:
        raise SraError(
            f"{path} is not a readable safetensors file ({_one_line(error)[:200]}): re-save "
            f"the student with save_pretrained"
        ) from None
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    problems = [f"missing {name}" for name in sorted(expected.keys() - tensors.keys())]
    problems += [f"unexpected {name}" for name in sorted(tensors.keys() - expected.keys())]
    for name, shape in expected.items():
        tensor = tensors.get(name)
        if tensor is None:
            continue
        if tuple(tensor.shape) != shape:
            problems.append(f"{name} has shape {list(tensor.shape)}, expected {list(shape)}")
        elif not tensor.is_floating_point():
            problems.append(f"{name} has dtype {tensor.dtype}, expected floating point")
        elif not bool(torch.isfinite(tensor).all()):
            problems.append(f"{name} contains NaN or infinite values")
    if problems:
        shown = "; ".join(problems[:3])
        if len(problems) > 3:
            shown += f"; and {len(problems) - 3} more"
        raise SraError(
            f"{path} does not match config.json ({shown}): the files come from different "
            f"students or were edited; re-save the student with save_pretrained"
        )
    model.load_state_dict(tensors, strict=True)
