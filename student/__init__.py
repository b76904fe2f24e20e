"""Stage two of the SRA pipeline: the BiLSTM student that approximates a BERT teacher.

A trained student encodes sentences on CPU without the teacher (and without
``transformers``)::

    from student import StudentEncoder
    enc = StudentEncoder.from_pretrained("runs/sra-minilm")
    vecs = enc.encode(["A sentence.", "Another one."])

Training one from a stage-one cache (``pipeline train``)::

    from student import TrainConfig, train
    train(TrainConfig(cache="caches/wiki-minilm", out="runs/sra-minilm"))

This package must never import ``transformers`` or the ``pipeline`` package: it only
needs torch, tokenizers, safetensors, numpy and the ``cache`` reader.
"""

from cache.errors import SraError
from student.config import StudentConfig
from student.encoder import StudentEncoder
from student.model import BiLSTMEncoder

# Last, and eagerly: the function `train` must shadow the submodule of the same name on the
# package (a lazy import would leave `student.train` bound to the module). The module itself
# stays reachable as sys.modules["student.train"] and through `from student.train import ...`.
from student.train import TrainConfig, train  # noqa: E402

__all__ = [
    "BiLSTMEncoder",
    "StudentConfig",
    "StudentEncoder",
    "SraError",
    "TrainConfig",
    "train",
]
