"""Stage two of the SRA pipeline: the BiLSTM student that approximates a BERT teacher.

A trained student encodes sentences on CPU without the teacher (and without
``transformers``)::

    from student import StudentEncoder
    enc = StudentEncoder.from_pretrained("runs/sra-minilm")
    vecs = enc.encode(["A sentence.", "Another one."])

This package must never import ``transformers`` or the ``pipeline`` package: it only
needs torch, tokenizers, safetensors and numpy.
"""

from student.config import StudentConfig
from student.encoder import StudentEncoder
from student.errors import StudentError
from student.model import BiLSTMEncoder

__all__ = ["BiLSTMEncoder", "StudentConfig", "StudentEncoder", "StudentError"]
