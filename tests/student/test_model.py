"""StudentConfig, BiLSTMEncoder and pca_project."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from student import BiLSTMEncoder, StudentConfig
from student.model import pca_project

VOCAB = 40


def make_config(**overrides) -> StudentConfig:
    fields = dict(vocab_size=VOCAB, embedding_dim=8, hidden_size=6, output_dim=5, dropout=0.0)
    fields.update(overrides)
    return StudentConfig(**fields)


def make_model(**overrides) -> BiLSTMEncoder:
    torch.manual_seed(0)
    return BiLSTMEncoder(make_config(**overrides)).eval()


def random_batch(lengths: list[int], width: int | None = None, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths) if width is None else width
    ids = torch.zeros(len(lengths), width, dtype=torch.long)  # pad_id 0 everywhere else
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(1, VOCAB, (n,), generator=generator)
    return ids, torch.tensor(lengths)


# ---------------------------------------------------------------------------- config


def test_config_defaults_follow_the_paper_and_round_trip():
    config = StudentConfig(vocab_size=30522)
    assert (config.embedding_dim, config.hidden_size, config.num_layers) == (300, 300, 1)
    assert config.bidirectional and config.pooling == "max"
    assert (config.output_dim, config.pad_id, config.max_length) == (384, 0, 128)
    assert config.teacher == config.teacher_pooling == config.cache_fingerprint == ""
    data = config.to_dict()
    assert StudentConfig.from_dict(data) == config
    # Written only when set: linear-projection students keep their config.json and run identity.
    assert "projection_hidden" not in data and config.projection_hidden == 0
    mlp = StudentConfig(vocab_size=30522, projection_hidden=64)
    assert StudentConfig.from_dict(mlp.to_dict()) == mlp
    assert StudentConfig.from_dict({"vocab_size": 7}) == StudentConfig(vocab_size=7)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("vocab_size", 0),
        ("embedding_dim", -3),
        ("hidden_size", 2.5),
        ("num_layers", True),
        ("output_dim", "384"),
        ("max_length", 0),
        ("pooling", "min"),
        ("dropout", 1.0),
        ("dropout", -0.1),
        ("dropout", float("nan")),
        ("bidirectional", "yes"),
        ("pad_id", 30522),
        ("teacher", 5),
        ("projection_hidden", -1),
        ("projection_hidden", 1.5),
    ],
)
def test_config_rejects_invalid_values_naming_the_key(key, value):
    data = StudentConfig(vocab_size=30522).to_dict()
    data[key] = value
    with pytest.raises(ValueError, match=key):
        StudentConfig.from_dict(data)


def test_config_rejects_unknown_and_missing_keys():
    with pytest.raises(ValueError, match="hidden_dim"):
        StudentConfig.from_dict({"vocab_size": 10, "hidden_dim": 3})
    with pytest.raises(ValueError, match="vocab_size"):
        StudentConfig.from_dict({"hidden_size": 3})
    with pytest.raises(ValueError):
        StudentConfig.from_dict(["vocab_size", 3])


# ---------------------------------------------------------------------------- forward


@pytest.mark.parametrize(
    ("pooling", "bidirectional", "num_layers", "pooled_dim"),
    [
        ("max", True, 1, 12),
        ("mean", True, 1, 12),
        ("max+mean", True, 1, 24),
        ("max", False, 2, 6),
        ("max+mean", False, 1, 12),
    ],
)
def test_forward_shapes(pooling, bidirectional, num_layers, pooled_dim):
    model = make_model(pooling=pooling, bidirectional=bidirectional, num_layers=num_layers)
    ids, lengths = random_batch([5, 3, 7, 1])
    assert model.pooled_dim == pooled_dim
    assert model.pooled(ids, lengths).shape == (4, pooled_dim)
    out = model(ids, lengths)
    assert out.shape == (4, 5) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_mlp_projection_maps_the_same_pooled_vector_to_the_output():
    linear, mlp = make_model(), make_model(projection_hidden=7)
    assert isinstance(linear.projection, torch.nn.Linear)
    assert [type(m).__name__ for m in mlp.projection] == ["Linear", "GELU", "Linear"]
    assert mlp.projection[0].in_features == mlp.pooled_dim and mlp.projection[0].out_features == 7
    ids, lengths = random_batch([5, 3, 0])
    # Same seed, same LSTM: the projection is the only difference between the two.
    assert torch.equal(linear.pooled(ids, lengths), mlp.pooled(ids, lengths))
    out = mlp(ids, lengths)
    assert out.shape == (3, 5) and torch.isfinite(out).all()
    assert torch.allclose(out, mlp.projection(mlp.pooled(ids, lengths)))


def test_set_dropout_changes_the_modules_and_the_config_together():
    model = make_model(num_layers=2)
    model.set_dropout(0.3)
    assert model.config.dropout == model.dropout.p == model.lstm.dropout == 0.3
    with pytest.raises(ValueError, match="dropout"):
        model.set_dropout(1.5)


@pytest.mark.parametrize("pooling", ["max", "mean", "max+mean"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_padding_does_not_change_a_sentence_vector(pooling, num_layers):
    model = make_model(pooling=pooling, num_layers=num_layers)
    lengths = [6, 2, 9, 4, 9, 1]
    ids, lens = random_batch(lengths, width=12)  # extra all-pad columns too
    with torch.no_grad():
        batched = model(ids, lens)
        for row, n in enumerate(lengths):
            alone = model(ids[row : row + 1, :n], torch.tensor([n]))
            torch.testing.assert_close(batched[row : row + 1], alone, rtol=1e-5, atol=1e-6)
        # Garbage (not pad) ids after a sentence's length are ignored too.
        noisy = ids.clone()
        noisy[noisy == 0] = 7
        torch.testing.assert_close(model(noisy, lens), batched, rtol=1e-5, atol=1e-6)


def test_mean_and_max_pool_only_valid_positions():
    model = make_model(pooling="max+mean")
    ids, lens = random_batch([4, 2], width=6)
    with torch.no_grad():
        pooled = model.pooled(ids, lens)
        out, _ = model.lstm(model.embedding(ids[1:, :2]))
    torch.testing.assert_close(pooled[1, :12], out[0].amax(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pooled[1, 12:], out[0].mean(0), rtol=1e-5, atol=1e-6)


def test_zero_length_rows_and_empty_batch():
    model = make_model()
    ids, lens = random_batch([3, 0, 5])
    ids[1, :] = 9  # whatever sits in an empty row is ignored
    with torch.no_grad():
        out = model(ids, lens)
        assert out.shape == (3, 5) and torch.isfinite(out).all()
        lone_pad = model(torch.zeros(1, 1, dtype=torch.long), torch.tensor([1]))
        torch.testing.assert_close(out[1:2], lone_pad, rtol=1e-5, atol=1e-6)
        # The other rows are unaffected by the empty one.
        torch.testing.assert_close(out[2:], model(ids[2:], lens[2:]), rtol=1e-5, atol=1e-6)
        # Only empty rows, even with no columns at all.
        width0 = model(torch.zeros(2, 0, dtype=torch.long), torch.tensor([0, 0]))
        torch.testing.assert_close(width0, lone_pad.expand(2, -1), rtol=1e-5, atol=1e-6)
        empty = model(torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, dtype=torch.long))
        assert empty.shape == (0, 5)
        assert model.pooled(torch.zeros(0, 0, dtype=torch.long), torch.zeros(0)).shape == (0, 12)


def test_bad_lengths_are_rejected():
    model = make_model()
    ids, _ = random_batch([3, 2])
    with pytest.raises(ValueError, match="lengths"):
        model(ids, torch.tensor([3]))
    with pytest.raises(ValueError, match="lengths"):
        model(ids, torch.tensor([4, 2]))
    with pytest.raises(ValueError, match="lengths"):
        model(ids, torch.tensor([-1, 2]))
    with pytest.raises(ValueError, match="input_ids"):
        model(ids.float(), torch.tensor([3, 2]))


def test_training_step_backpropagates_through_packed_sequences():
    model = make_model(dropout=0.2, num_layers=2, pooling="max+mean").train()
    ids, lens = random_batch([5, 2, 7, 0])
    target = torch.randn(4, 5)
    loss = 1 - torch.nn.functional.cosine_similarity(model(ids, lens), target).mean()
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["embedding.weight"][0].abs().sum() == 0  # pad row gets no gradient
    # Equal lengths take the unpacked LSTM call; it must train as well.
    model.zero_grad()
    uniform_ids, uniform_lens = random_batch([4, 4, 4])
    model(uniform_ids, uniform_lens).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_bf16_autocast_matches_fp32():
    model = make_model(pooling="max+mean")
    ids, lens = random_batch([6, 2, 9, 4], width=10)
    with torch.inference_mode():
        fp32 = model(ids, lens)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(ids, lens)
            uniform = model(ids[:, :4], torch.tensor([4, 4, 4, 4]))
    assert uniform.shape == (4, 5)
    cosine = torch.nn.functional.cosine_similarity(fp32, bf16.float())
    assert (cosine > 0.99).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_forward_matches_cpu():
    model = make_model(pooling="mean")
    ids, lens = random_batch([6, 2, 9, 0])
    with torch.no_grad():
        cpu = model(ids, lens)
        gpu = model.to("cuda")(ids.cuda(), lens.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------------------- embeddings


def test_init_embeddings_copies_and_zeroes_the_pad_row():
    model = make_model(pad_id=3)
    matrix = np.random.default_rng(0).normal(size=(VOCAB, 8)).astype(np.float32)
    model.init_embeddings(matrix)
    weight = model.embedding.weight.detach().numpy()
    np.testing.assert_array_equal(np.delete(weight, 3, axis=0), np.delete(matrix, 3, axis=0))
    assert not weight[3].any()
    with pytest.raises(ValueError, match=r"\[40, 8\]"):
        model.init_embeddings(torch.zeros(VOCAB, 9))


def test_pca_project_shapes_scale_and_determinism():
    teacher = np.random.default_rng(1).normal(scale=0.05, size=(200, 24))
    reduced = pca_project(teacher, 10)
    assert reduced.shape == (200, 10) and reduced.dtype == torch.float32
    assert abs(float(reduced.std()) - 1.0) < 0.01  # nn.Embedding's N(0, 1) scale
    torch.testing.assert_close(pca_project(torch.from_numpy(teacher).float(), 10), reduced)
    # Variance is ordered: the first component carries the most.
    variances = reduced.var(dim=0)
    assert torch.all(variances[:-1] >= variances[1:] - 1e-6)

    widened = pca_project(teacher, 30, seed=5)
    assert widened.shape == (200, 30)
    assert float(widened[:, 24:].std()) < 0.05  # only small noise beyond the 24 real dims
    torch.testing.assert_close(widened, pca_project(teacher, 30, seed=5))
    assert not torch.equal(widened[:, 24:], pca_project(teacher, 30, seed=6)[:, 24:])

    with pytest.raises(ValueError):
        pca_project(teacher, 0)
    with pytest.raises(ValueError):
        pca_project(teacher[0], 4)


def test_pca_project_keeps_the_top_principal_direction():
    rng = np.random.default_rng(2)
    direction = rng.normal(size=32)
    direction /= np.linalg.norm(direction)
    strength = rng.normal(scale=5.0, size=(500, 1))
    teacher = strength * direction + rng.normal(scale=0.3, size=(500, 32)) + 3.0
    reduced = pca_project(teacher, 4).double().numpy()
    along = (teacher - teacher.mean(0)) @ direction
    correlation = np.corrcoef(reduced[:, 0], along)[0, 1]
    assert abs(correlation) > 0.999
    # The other components are uncorrelated with it.
    assert all(abs(np.corrcoef(reduced[:, k], along)[0, 1]) < 0.1 for k in (1, 2, 3))


@pytest.mark.parametrize(
    "layers, bidirectional, pooling", [(1, True, "max"), (2, True, "max+mean"), (2, False, "mean")]
)
def test_right_padded_lstm_equals_packed_sequences(layers, bidirectional, pooling):
    from student.model import lstm_packed

    torch.manual_seed(0)
    model = make_model(
        num_layers=layers, bidirectional=bidirectional, pooling=pooling, dropout=0.0
    ).train()
    ids, lens = random_batch([12, 3, 7, 1, 0, 12, 5], width=12)
    fast = model.pooled(ids, lens)
    fast.sum().backward()
    fast_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    reference = lstm_packed(model, ids, lens)
    reference.sum().backward()
    torch.testing.assert_close(fast, reference, atol=1e-6, rtol=1e-5)
    for name, grad in fast_grads.items():
        torch.testing.assert_close(
            grad, dict(model.named_parameters())[name].grad, atol=1e-5, rtol=1e-4
        )
