"""StudentEncoder: encode, save/load, bad folders, and running without transformers."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

import student.encoder as encoder_module
from student import BiLSTMEncoder, SraError, StudentConfig, StudentEncoder
from tests.student.conftest import SENTENCES, WORDS, build_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fp32(monkeypatch):
    """Encode in plain fp32 so batched and one-by-one results can be compared tightly."""
    monkeypatch.setattr(encoder_module, "cpu_bf16_supported", lambda: False)


@pytest.fixture
def saved(tiny_encoder: StudentEncoder, tmp_path: Path) -> Path:
    folder = tmp_path / "student"
    tiny_encoder.save_pretrained(folder)
    return folder


def many_sentences(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(0, 20))) for _ in range(count)]


# ---------------------------------------------------------------------------- encode


def test_encode_restores_the_input_order(tiny_encoder, fp32):
    sentences = SENTENCES + many_sentences(90)  # some length runs >= 32 -> unpacked batches
    random.Random(3).shuffle(sentences)
    batched = tiny_encoder.encode(sentences, batch_size=8)
    alone = np.stack([tiny_encoder.encode(s) for s in sentences])
    assert batched.shape == (len(sentences), 10) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, alone, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tiny_encoder.encode(sentences), alone, rtol=1e-5, atol=1e-6)
    assert np.array_equal(batched[0], batched[sentences.index(sentences[0])])


def test_encode_under_bf16_autocast_is_close_to_fp32(tiny_encoder, monkeypatch):
    sentences = SENTENCES + many_sentences(50)
    monkeypatch.setattr(encoder_module, "cpu_bf16_supported", lambda: True)
    bf16 = tiny_encoder.encode(sentences, batch_size=16, normalize=True)
    monkeypatch.setattr(encoder_module, "cpu_bf16_supported", lambda: False)
    fp32 = tiny_encoder.encode(sentences, batch_size=16, normalize=True)
    assert bf16.dtype == np.float32
    assert (np.sum(bf16 * fp32, axis=1) > 0.99).all()


def test_plan_batches_covers_every_sentence_once():
    lengths = np.array([5] * 70 + [3] * 10 + [9] * 33 + [1] * 4 + [0] * 2, dtype=np.int64)
    np.random.default_rng(0).shuffle(lengths)
    batches = encoder_module.plan_batches(lengths, batch_size=32)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    assert all(0 < len(b) <= 32 for b in batches)
    uniform = [b for b in batches if len(set(lengths[b].tolist())) == 1]
    assert sum(len(b) for b in uniform) == 96  # full batches from the runs of 70 and 33


def test_encode_shapes_dtype_and_normalize(tiny_encoder):
    single = tiny_encoder.encode("The cat sat on the mat.")
    assert single.shape == (10,) and single.dtype == np.float32
    assert tiny_encoder.encode(["The cat sat on the mat."]).shape == (1, 10)
    assert tiny_encoder.encode([]).shape == (0, 10)
    assert tiny_encoder.encode([], normalize=True).dtype == np.float32
    empty = tiny_encoder.encode("")
    assert empty.shape == (10,) and np.isfinite(empty).all()
    unit = tiny_encoder.encode(SENTENCES, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)
    assert unit.dtype == np.float32
    progress = tiny_encoder.encode(SENTENCES, batch_size=3, show_progress_bar=True, device="cpu")
    assert progress.shape == (len(SENTENCES), 10)
    with pytest.raises(TypeError):
        tiny_encoder.encode(["fine", 3])
    with pytest.raises(ValueError):
        tiny_encoder.encode(["fine"], batch_size=0)


def test_encode_truncates_to_max_length_keeping_special_tokens(tiny_encoder, fp32):
    words = (WORDS * 2)[:40]
    tokens = tiny_encoder._tokenizer.encode(" ".join(words))
    assert len(tokens.ids) == 16  # config.max_length
    assert tokens.tokens[0] == "[CLS]" and tokens.tokens[-1] == "[SEP]"
    np.testing.assert_allclose(
        tiny_encoder.encode(" ".join(words)), tiny_encoder.encode(" ".join(words[:14])), rtol=1e-6
    )


def test_tokenizer_side_padding_and_truncation_are_overridden(tiny_config, fp32):
    torch.manual_seed(0)
    plain = StudentEncoder(tiny_config, tokenizer=build_tokenizer())
    odd = build_tokenizer()
    odd.enable_padding(length=40, pad_id=0, pad_token="[PAD]")
    odd.enable_truncation(max_length=4)
    padded = StudentEncoder(tiny_config, plain.model, tokenizer=odd)
    np.testing.assert_array_equal(padded.encode(SENTENCES), plain.encode(SENTENCES))
    assert odd.padding is not None  # the caller's tokenizer is left as it was


def test_encode_runs_in_eval_mode_and_restores_training(tiny_config, tokenizer):
    config = StudentConfig.from_dict({**tiny_config.to_dict(), "dropout": 0.5})
    enc = StudentEncoder(config, tokenizer=tokenizer)
    enc.model.train()
    first = enc.encode(SENTENCES)
    assert np.array_equal(first, enc.encode(SENTENCES))  # no dropout noise
    assert enc.model.training


def test_constructor_checks(tiny_config, tokenizer, tmp_path):
    other = StudentConfig.from_dict({**tiny_config.to_dict(), "hidden_size": 4})
    with pytest.raises(ValueError, match="different StudentConfig"):
        StudentEncoder(tiny_config, BiLSTMEncoder(other), tokenizer=tokenizer)
    small = StudentConfig.from_dict({**tiny_config.to_dict(), "vocab_size": 20})
    with pytest.raises(ValueError, match="vocab_size"):
        StudentEncoder(small, tokenizer=tokenizer)
    tokenizer.save(str(tmp_path / "tok.json"))
    from_path = StudentEncoder(tiny_config, tokenizer=tmp_path / "tok.json")
    assert from_path.encode("a cat").shape == (10,)


# ---------------------------------------------------------------------------- save / load


def test_save_load_round_trip_is_exact(tiny_encoder, saved):
    assert sorted(p.name for p in saved.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")]  # no temp left
    config = json.loads((saved / "config.json").read_text())
    assert config["format"] == "sra-student" and config["format_version"] == 1
    assert config["teacher"] == "tiny-test-teacher"

    loaded = StudentEncoder.from_pretrained(saved)
    assert loaded.config == tiny_encoder.config
    assert not loaded.model.training
    np.testing.assert_array_equal(loaded.encode(SENTENCES), tiny_encoder.encode(SENTENCES))
    for name, tensor in tiny_encoder.model.state_dict().items():
        assert torch.equal(tensor, loaded.model.state_dict()[name])


def test_save_load_round_trip_with_an_mlp_projection(tiny_config, tokenizer, tmp_path):
    config = StudentConfig(**{**tiny_config.to_dict(), "projection_hidden": 9})
    torch.manual_seed(0)
    encoder = StudentEncoder(config, tokenizer=tokenizer)
    encoder.save_pretrained(tmp_path / "mlp")
    assert json.loads((tmp_path / "mlp" / "config.json").read_text())["projection_hidden"] == 9
    loaded = StudentEncoder.from_pretrained(tmp_path / "mlp")
    assert loaded.config == config
    np.testing.assert_array_equal(loaded.encode(SENTENCES), encoder.encode(SENTENCES))


def test_save_into_an_existing_folder_replaces_files_and_keeps_others(tiny_config, saved):
    (saved / "notes.txt").write_text("keep me")
    torch.manual_seed(1)
    replacement = StudentEncoder(tiny_config, tokenizer=build_tokenizer())
    replacement.save_pretrained(str(saved))
    assert sorted(p.name for p in saved.iterdir()) == [
        "config.json",
        "model.safetensors",
        "notes.txt",
        "tokenizer.json",
    ]
    np.testing.assert_array_equal(
        StudentEncoder.from_pretrained(saved).encode(SENTENCES), replacement.encode(SENTENCES)
    )
    with pytest.raises(SraError, match="notes.txt"):
        replacement.save_pretrained(saved / "notes.txt")


def _one_line_error(folder: Path, *names: str) -> str:
    with pytest.raises(SraError) as info:
        StudentEncoder.from_pretrained(folder)
    message = str(info.value)
    assert "\n" not in message
    for name in names:
        assert name in message, message
    return message


def test_missing_folder_or_file(saved, tmp_path):
    _one_line_error(tmp_path / "nowhere", "nowhere", "local files only")
    _one_line_error(saved / "config.json", "config.json", "not a folder")


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "tokenizer.json"])
def test_each_missing_file_is_named(saved, name):
    (saved / name).unlink()
    _one_line_error(saved, name, "missing")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        ("[1, 2]", "not a student config"),
        ('{"vocab_size": 59}', "not a student config"),
        ('{"format": "sra-student", "format_version": 9, "vocab_size": 59}', "format_version"),
        ('{"format": "sra-student", "format_version": 1, "vocab_size": 59, "x": 1}', "x"),
        ('{"format": "sra-student", "format_version": 1, "vocab_size": 0}', "vocab_size"),
    ],
)
def test_bad_config_json(saved, text, expected):
    path = saved / "config.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    _one_line_error(saved, "config.json", expected)


def test_config_that_disagrees_with_the_weights(saved):
    path = saved / "config.json"
    config = json.loads(path.read_text())
    config["hidden_size"] = 7
    path.write_text(json.dumps(config))
    _one_line_error(saved, "model.safetensors", "shape")


def _tamper(folder: Path, edit) -> None:
    path = folder / "model.safetensors"
    tensors = safetensors.torch.load_file(path)
    edit(tensors)
    safetensors.torch.save_file(tensors, path)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t.update({"projection.weight": torch.zeros(3, 3)}), "projection.weight"),
        (lambda t: t.pop("lstm.weight_hh_l0_reverse"), "missing lstm.weight_hh_l0_reverse"),
        (lambda t: t.update({"head.bias": torch.zeros(2)}), "unexpected head.bias"),
        (lambda t: t.update({"projection.bias": torch.zeros(10, dtype=torch.int64)}), "dtype"),
        (lambda t: t["projection.bias"].fill_(float("nan")), "NaN"),
    ],
)
def test_tampered_weights(saved, edit, expected):
    _tamper(saved, edit)
    _one_line_error(saved, "model.safetensors", expected)


def test_garbage_weights_file(saved):
    (saved / "model.safetensors").write_bytes(b"\x00" * 8 + b"definitely not safetensors")
    _one_line_error(saved, "model.safetensors", "not a readable safetensors file")


@pytest.mark.parametrize("garbage", ["tokens!", '{"version": "1.0"}', ""])
def test_garbage_tokenizer_file(saved, garbage):
    (saved / "tokenizer.json").write_text(garbage)
    _one_line_error(saved, "tokenizer.json", "not a readable tokenizers file")


def test_tokenizer_from_another_model(saved):
    big = build_tokenizer()
    big.add_tokens([f"extra{i}" for i in range(10)])
    big.save(str(saved / "tokenizer.json"))
    _one_line_error(saved, "tokenizer.json", "vocab_size")


# ---------------------------------------------------------------------------- no transformers


@pytest.mark.slow
def test_loads_and_encodes_where_transformers_cannot_be_imported(saved, tmp_path):
    blocker = tmp_path / "blocker"
    for name in ("transformers", "pipeline"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(
            f"raise ImportError('{name} is blocked in this test')\n"
        )
    script = textwrap.dedent(
        f"""
        import sys
        from student import StudentEncoder
        enc = StudentEncoder.from_pretrained({str(saved)!r})
        vecs = enc.encode(["A cat sat.", "", "the dog ran quickly"], normalize=True)
        assert vecs.shape == (3, 10), vecs.shape
        assert not any(m.split(".")[0] in ("transformers", "pipeline") for m in sys.modules)
        try:
            import transformers  # noqa: F401
        except ImportError:
            print("OK", vecs.shape)
        else:
            raise SystemExit("the import blocker did not work")
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(REPO_ROOT)])}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK (3, 10)"


def test_a_lone_surrogate_is_one_error_naming_the_sentence(tiny_encoder):
    with pytest.raises(SraError, match=r"sentence 2 is not valid Unicode text .*'\\ud800'"):
        tiny_encoder.encode(["fine", "also fine", "bad \ud800 text"])
    with pytest.raises(SraError, match="sentence 0 "):
        tiny_encoder.encode("\udcff")
    assert tiny_encoder.encode(["fine"]).shape == (1, tiny_encoder.config.output_dim)
