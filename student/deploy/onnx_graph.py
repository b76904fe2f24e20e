"""The student as an ONNX graph, written op by op from its weights (no tracing).

Why by hand: the student's exactness rests on one detail, that the backward LSTM direction
starts at each sentence's own last token. ONNX's LSTM operator has that built in (its
``sequence_lens`` input), and ONNX Runtime's CPU kernel honours it, so the graph is a few
standard ops around one LSTM node per layer:

    input_ids [batch, seq] int64, lengths [batch] int64
      -> Gather (embedding) -> LSTM (bidirectional, sequence_lens) [x layers]
      -> masked max / mean over the valid positions -> Linear (or Linear -> GELU -> Linear)
      -> embeddings [batch, output_dim]

Tracing ``BiLSTMEncoder`` with ``torch.onnx.export`` would instead record whichever code path
the example batch took (its right-padded reversal trick, or a dense LSTM for equal lengths).

A task model is the same encoder applied to one sentence (or two, for pair tasks) and the
task head on top (``pair_features`` then Linear, or Linear -> tanh -> Linear): one graph from
token ids to ``logits [batch, outputs]``.

Rows with length 0 behave as in ``BiLSTMEncoder``: their length is taken as 1 and their first
id as ``pad_id``, so an empty row gets the vector of a lone pad token. Batch and sequence axes
are dynamic. The graph uses opset 17 (ONNX Runtime >= 1.13) and only standard-domain ops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx

    from student.model import BiLSTMEncoder

OPSET = 17
# PyTorch stores LSTM gates as (input, forget, cell, output), ONNX as (input, output, forget,
# cell): the chunk order that turns the first into the second.
TORCH_TO_ONNX_GATES = (0, 3, 1, 2)


@dataclass
class HeadWeights:
    """A task head as arrays: ``layers`` are (weight [out, in], bias [out]) pairs with tanh
    between them (one pair: linear head; two: the MLP head); ``pair`` heads read two
    sentences through ``pair_features``."""

    layers: list[tuple[np.ndarray, np.ndarray]]
    pair: bool


@dataclass
class _Graph:
    """Nodes and initializers being collected; names are made unique by a counter."""

    nodes: list[Any] = field(default_factory=list)
    initializers: list[Any] = field(default_factory=list)
    shared: dict[tuple[str, str], str] = field(default_factory=dict)
    count: int = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, hint: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        # (np.ascontiguousarray would turn a 0-d scalar into shape [1].)
        self.initializers.append(numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def scalar(self, value: int | float, dtype: type = np.int64) -> str:
        """A shared constant (scalar, or a 1-d list), added the first time it is asked for."""
        key = (np.dtype(dtype).name, repr(value))
        if key not in self.shared:
            self.shared[key] = self.const("c", np.array(value, dtype=dtype))
        return self.shared[key]

    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray, hint: str) -> str:
        """``x @ weight.T + bias`` as MatMul + Add (not Gemm): ONNX Runtime's dynamic int8
        quantization covers MatMul, and Gemm it leaves in fp32."""
        w = self.const(f"{hint}_w", np.ascontiguousarray(weight.T))
        return self.op("Add", [self.op("MatMul", [x, w]), self.const(f"{hint}_b", bias)])

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def encoder_graph(model: BiLSTMEncoder) -> onnx.ModelProto:
    """``input_ids [batch, seq]``, ``lengths [batch]`` -> ``embeddings [batch, output_dim]``."""
    from onnx import TensorProto, helper

    g = _Graph()
    weights = _EncoderWeights(g, model)
    out = weights.apply("input_ids", "lengths")
    outputs = [
        helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", model.config.output_dim])
    ]
    return _model(g, _inputs(""), outputs, "sra-student-encoder", rename={out: "embeddings"})


def task_graph(model: BiLSTMEncoder, head: HeadWeights) -> onnx.ModelProto:
    """``input_ids``, ``lengths`` (and ``input_ids_b``, ``lengths_b`` for pair tasks) ->
    ``logits [batch, outputs]``: the encoder on each sentence, then the head."""
    from onnx import TensorProto, helper

    g = _Graph()
    weights = _EncoderWeights(g, model)
    inputs = _inputs("")
    if head.pair:
        inputs += _inputs("_b")
        u, v = _both_sides(g, weights)
        diff = g.op("Abs", [g.op("Sub", [u, v])])
        x = g.op("Concat", [u, v, diff, g.op("Mul", [u, v])], axis=1)
    else:
        x = weights.apply("input_ids", "lengths")
    for i, (w, b) in enumerate(head.layers):
        if i:
            x = g.op("Tanh", [x])
        x = g.linear(x, w, b, "head")
    outputs_dim = head.layers[-1][0].shape[0]
    outputs = [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", outputs_dim])]
    return _model(g, inputs, outputs, "sra-student-task", rename={x: "logits"})


def _both_sides(g: _Graph, weights: _EncoderWeights) -> tuple[str, str]:
    """The encoder over both sentences of each pair in one pass: the two id matrices padded
    to one width and stacked, then the vectors split back. One LSTM node, not two: faster,
    and ONNX Runtime's int8 tool cannot quantize an LSTM weight that two nodes share."""
    zero, one = g.scalar(0), g.scalar(1)
    width_a = g.op("Gather", [g.op("Shape", ["input_ids"]), one])
    width_b = g.op("Gather", [g.op("Shape", ["input_ids_b"]), one])
    width = g.op("Max", [width_a, width_b])
    padded = []
    for ids, own in (("input_ids", width_a), ("input_ids_b", width_b)):
        extra = g.op("Unsqueeze", [g.op("Sub", [width, own]), g.scalar([0])])
        pads = g.op("Concat", [g.scalar([0, 0, 0]), extra], axis=0)  # [begin0, begin1, end0, end1]
        padded.append(g.op("Pad", [ids, pads, g.scalar(weights.config.pad_id)]))
    ids = g.op("Concat", padded, axis=0)
    lengths = g.op("Concat", ["lengths", "lengths_b"], axis=0)
    both = weights.apply(ids, lengths)
    rows = g.op("Unsqueeze", [g.op("Gather", [g.op("Shape", ["input_ids"]), zero]), g.scalar([0])])
    end = g.scalar([np.iinfo(np.int64).max])
    u = g.op("Slice", [both, g.scalar([0]), rows, g.scalar([0])])
    v = g.op("Slice", [both, rows, end, g.scalar([0])])
    return u, v


class _EncoderWeights:
    """The encoder's weights as initializers (added once), and ``apply`` to add its ops for
    one pair of (ids, lengths) inputs (twice for a pair task, sharing the weights)."""

    def __init__(self, g: _Graph, model: BiLSTMEncoder) -> None:
        self.g, self.config = g, model.config
        state = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
        self.embedding = g.const("embedding", state["embedding.weight"])
        lstm = model.lstm
        directions = ["", "_reverse"] if lstm.bidirectional else [""]
        self.layers = []
        for layer in range(lstm.num_layers):
            parts = [[state[f"lstm.{w}_l{layer}{d}"] for d in directions] for w in _LSTM_WEIGHTS]
            w_ih, w_hh, b_ih, b_hh = ([_gates(a) for a in group] for group in parts)
            self.layers.append(
                (
                    g.const(f"lstm{layer}_W", np.stack(w_ih)),
                    g.const(f"lstm{layer}_R", np.stack(w_hh)),
                    g.const(
                        f"lstm{layer}_B",
                        np.stack([np.concatenate([i, h]) for i, h in zip(b_ih, b_hh, strict=True)]),
                    ),
                )
            )
        self.direction = "bidirectional" if lstm.bidirectional else "forward"
        self.hidden = lstm.hidden_size
        names = (
            ["projection.0", "projection.2"] if self.config.projection_hidden else ["projection"]
        )
        self.projection = [(state[f"{n}.weight"], state[f"{n}.bias"]) for n in names]

    def apply(self, ids: str, lengths: str) -> str:
        g = self.g
        zero, one = g.scalar(0), g.scalar(1)
        axis = {a: g.scalar([a]) for a in range(3)}
        # Empty rows: length 1, first id pad_id (as BiLSTMEncoder._prepare).
        steps = g.op("Range", [zero, g.op("Gather", [g.op("Shape", [ids]), one]), one])
        empty = g.op("Unsqueeze", [g.op("Equal", [lengths, zero]), axis[1]])
        first = g.op("Unsqueeze", [g.op("Equal", [steps, zero]), axis[0]])
        ids = g.op("Where", [g.op("And", [empty, first]), g.scalar(self.config.pad_id), ids])
        lengths = g.op("Max", [lengths, one])

        # [seq, batch, embedding]: ONNX's LSTM reads time-major input.
        x = g.op("Gather", [self.embedding, g.op("Transpose", [ids], perm=[1, 0])], axis=0)
        seq_lens = g.op("Cast", [lengths], to=_int32())
        for layer, (w, r, b) in enumerate(self.layers):
            y = g.op(
                "LSTM",
                [x, w, r, b, seq_lens],
                hint=f"lstm{layer}",
                direction=self.direction,
                hidden_size=self.hidden,
            )
            # Y: [seq, directions, batch, hidden] -> [seq, batch, directions * hidden]
            y = g.op("Transpose", [y], perm=[0, 2, 1, 3])
            x = g.op("Reshape", [y, g.scalar([0, 0, -1])])
        states = g.op("Transpose", [x], perm=[1, 0, 2])  # [batch, seq, features]

        valid = g.op(
            "Less", [g.op("Unsqueeze", [steps, axis[0]]), g.op("Unsqueeze", [lengths, axis[1]])]
        )
        valid = g.op("Unsqueeze", [valid, axis[2]])  # [batch, seq, 1]
        parts = []
        if self.config.pooling in ("max", "max+mean"):
            masked = g.op("Where", [valid, states, g.scalar(-np.inf, np.float32)])
            parts.append(g.op("ReduceMax", [masked], axes=[1], keepdims=0))
        if self.config.pooling in ("mean", "max+mean"):
            kept = g.op("Mul", [states, g.op("Cast", [valid], to=_float())])
            summed = g.op("ReduceSum", [kept, axis[1]], keepdims=0)
            count = g.op("Cast", [g.op("Unsqueeze", [lengths, axis[1]])], to=_float())
            parts.append(g.op("Div", [summed, count]))
        x = parts[0] if len(parts) == 1 else g.op("Concat", parts, axis=1)

        for i, (w, b) in enumerate(self.projection):
            if i:
                x = _gelu(g, x)
            x = g.linear(x, w, b, "projection")
        return x


_LSTM_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _gates(array: np.ndarray) -> np.ndarray:
    chunks = np.split(array, 4, axis=0)
    return np.concatenate([chunks[i] for i in TORCH_TO_ONNX_GATES], axis=0)


def _gelu(g: _Graph, x: str) -> str:
    """Exact GELU (nn.GELU's default): x * 0.5 * (1 + erf(x / sqrt(2)))."""
    erf = g.op("Erf", [g.op("Div", [x, g.scalar(np.sqrt(2.0), np.float32)])])
    half_x = g.op("Mul", [x, g.scalar(0.5, np.float32)])
    return g.op("Mul", [half_x, g.op("Add", [erf, g.scalar(1.0, np.float32)])])


def _inputs(suffix: str) -> list[Any]:
    from onnx import TensorProto, helper

    return [
        helper.make_tensor_value_info(f"input_ids{suffix}", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info(f"lengths{suffix}", TensorProto.INT64, ["batch"]),
    ]


def _model(
    g: _Graph, inputs: list[Any], outputs: list[Any], name: str, rename: dict[str, str]
) -> onnx.ModelProto:
    """Assemble and check the model; the last node's output gets its public name."""
    import onnx
    from onnx import helper

    for node in g.nodes:
        node.output[:] = [rename.get(o, o) for o in node.output]
    for value in outputs:
        value.name = rename.get(value.name, value.name)
    graph = helper.make_graph(g.nodes, name, inputs, outputs, initializer=g.initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="sra-distill"
    )
    model.ir_version = 8  # readable by ONNX Runtime >= 1.13
    onnx.checker.check_model(model, full_check=True)
    return model


def _int32() -> int:
    from onnx import TensorProto

    return TensorProto.INT32


def _float() -> int:
    from onnx import TensorProto

    return TensorProto.FLOAT


def serialize(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString()
