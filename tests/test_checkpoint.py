"""Checkpoint I/O: reading formats, name mapping, head policy, writing, atomic output."""

import json
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from finemix.config import MixConfig
from finemix.errors import FinemixError
from finemix.repair.steps import mix_checkpoint
from finemix.weights.names import map_names, prefix_candidates
from finemix.weights.output import TEMP_MARKER, atomic_output_dir
from finemix.weights.pair import open_pair
from finemix.weights.reader import TensorReader
from finemix.weights.tokenizer_files import same_tokenizer_files
from finemix.weights.writer import ShardedWriter, TensorSpec
from tiny_models import load_state


def test_reader_matches_saved_state(tiny_pair):
    reader = TensorReader(tiny_pair.finetuned)
    state = load_state(tiny_pair.finetuned)
    assert sorted(reader.names()) == sorted(state)
    for name in state:
        assert torch.equal(reader.get(name), state[name])
        assert reader.shape(name) == tuple(state[name].shape)


@pytest.mark.parametrize("options", [{"sharded": True}, {"bin_format": True}])
def test_reader_handles_sharded_and_bin(tiny_pair_factory, options):
    pair = tiny_pair_factory("bert", **options)
    reader = TensorReader(pair.pretrained)
    state = load_state(pair.pretrained)
    assert sorted(reader.names()) == sorted(state)
    assert all(torch.equal(reader.get(n), state[n]) for n in state)


def test_name_mapping_strips_the_base_prefix(tiny_pair):
    pair = open_pair(tiny_pair.finetuned, tiny_pair.pretrained)
    prefix = {"bert": "bert.", "roberta": "roberta.", "distilbert": "distilbert.", "electra": "electra."}[tiny_pair.arch]
    assert pair.names.rule == f"strip '{prefix}'"
    for ft_name, pre_name in pair.names.pairs.items():
        assert ft_name == prefix + pre_name
    # what θ_Pre lacks is the task head (and nothing of the encoder)
    assert pair.names.finetuned_only and all(not n.startswith(prefix) for n in pair.names.finetuned_only)


def test_name_mapping_adds_prefix_and_identity():
    assert prefix_candidates(["encoder.w", "head"], ["bert.encoder.w"]) == ["bert", "encoder"]
    assert map_names(["encoder.w", "head"], ["bert.encoder.w"], ["bert", "encoder"]).rule == "add 'bert.'"
    mapped = map_names(["bert.encoder.w", "classifier.w"], ["bert.encoder.w", "cls.x"], ["classifier", "cls"])
    assert mapped.rule == "identical names"
    assert mapped.finetuned_only == ["classifier.w"] and mapped.pretrained_only == ["cls.x"]
    with pytest.raises(FinemixError, match="share no tensor names"):
        map_names(["a"], ["b"], ["bert"])


def _mixed_state(tmp_path, pair, config):
    out = tmp_path / "mixed"
    mix_checkpoint(pair.finetuned, pair.pretrained, out, config)
    return load_state(out), out


@pytest.mark.parametrize("mode", ["random", "sel"])
def test_mix_limits_on_real_checkpoints(tmp_path, tiny_pair, mode):
    ft, pre = load_state(tiny_pair.finetuned), load_state(tiny_pair.pretrained)
    pair = open_pair(tiny_pair.finetuned, tiny_pair.pretrained)
    one, _ = _mixed_state(tmp_path / "one", tiny_pair, MixConfig(ratio=1.0, mode=mode))
    zero, _ = _mixed_state(tmp_path / "zero", tiny_pair, MixConfig(ratio=0.0, mode=mode))
    assert all(torch.equal(one[n], ft[n]) for n in ft)
    for name in ft:
        if name in pair.names.pairs:
            assert torch.equal(zero[name], pre[pair.names.pairs[name]])
        else:  # head kept by default
            assert torch.equal(zero[name], ft[name])


def test_head_reinit_policy_and_report(tmp_path, bert_pair):
    out = tmp_path / "reinit"
    report = mix_checkpoint(bert_pair.finetuned, bert_pair.pretrained, out, MixConfig(ratio=0.5, head="reinit"))
    ft, mixed = load_state(bert_pair.finetuned), load_state(out)
    assert report["mixing"]["head_tensors"] == ["classifier.bias", "classifier.weight"] or sorted(report["mixing"]["head_tensors"]) == ["classifier.bias", "classifier.weight"]
    assert torch.equal(mixed["classifier.bias"], torch.zeros_like(ft["classifier.bias"]))
    assert not torch.equal(mixed["classifier.weight"], ft["classifier.weight"])
    assert mixed["classifier.weight"].std() < 0.05
    saved = json.loads((out / "finemix_report.json").read_text())
    assert saved["mixing"]["head_policy"] == "reinit"


def test_mix_is_deterministic_and_order_independent(tmp_path, bert_pair):
    a, _ = _mixed_state(tmp_path / "a", bert_pair, MixConfig(ratio=0.3, seed=5))
    b, _ = _mixed_state(tmp_path / "b", bert_pair, MixConfig(ratio=0.3, seed=5))
    assert all(torch.equal(a[n], b[n]) for n in a)
    # same masks when tensors come from a differently ordered (sharded) copy of the same weights
    c, _ = _mixed_state(tmp_path / "c", bert_pair, MixConfig(ratio=0.3, seed=6))
    assert any(not torch.equal(a[n], c[n]) for n in a)


def test_output_loads_with_transformers(tmp_path, tiny_pair):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "mixed"
    mix_checkpoint(tiny_pair.finetuned, tiny_pair.pretrained, out, MixConfig(ratio=0.5))
    model = AutoModelForSequenceClassification.from_pretrained(out)
    AutoTokenizer.from_pretrained(out)
    saved = load_state(out)
    assert all(torch.equal(model.state_dict()[n], saved[n]) for n in saved)


def test_sharded_writer_round_trip(tmp_path):
    tensors = {f"t{i}": torch.randn(100, 10) for i in range(5)}
    writer = ShardedWriter(tmp_path, [TensorSpec.of(n, t) for n, t in tensors.items()], max_shard_bytes=9000)
    for name, tensor in tensors.items():
        writer.add(name, tensor)
    writer.close()
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 3  # 4000-byte tensors, 9000-byte shards: two per shard
    reader = TensorReader(tmp_path)
    assert all(torch.equal(reader.get(n), t) for n, t in tensors.items())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.bool, torch.uint8])
def test_streamed_file_reads_back_with_safetensors_and_transformers_layout(tmp_path, dtype):
    """The hand-written header must be exactly what safetensors' own reader accepts."""

    tensors = {"scalar": torch.tensor(3.0).to(dtype), "empty": torch.zeros(0, 4).to(dtype),
               "odd": (torch.arange(7 * 3) % 2).reshape(7, 3).to(dtype), "big": torch.randn(64, 33).to(dtype)}
    writer = ShardedWriter(tmp_path, [TensorSpec.of(n, t) for n, t in tensors.items()])
    for name, tensor in tensors.items():
        writer.add(name, tensor)
    writer.close()
    loaded = load_file(tmp_path / "model.safetensors")
    assert loaded.keys() == tensors.keys()
    assert all(loaded[n].dtype == dtype and torch.equal(loaded[n], t) for n, t in tensors.items())


def test_writer_refuses_undeclared_or_missing_tensors(tmp_path):
    specs = [TensorSpec.of("a", torch.zeros(2)), TensorSpec.of("b", torch.zeros(3))]
    writer = ShardedWriter(tmp_path, specs)
    with pytest.raises(FinemixError, match="expected"):
        writer.add("b", torch.zeros(3))  # out of order
    writer.add("a", torch.zeros(2))
    with pytest.raises(FinemixError, match="never written: b"):
        writer.close()
    writer.abort()
    with pytest.raises(FinemixError, match="expected"):
        ShardedWriter(tmp_path, specs).add("a", torch.zeros(2, dtype=torch.float64))  # wrong dtype


def test_shape_mismatch_is_a_clear_error(tmp_path, tiny_pair_factory):
    bert = tiny_pair_factory("bert")
    other = tiny_pair_factory("bert", num_labels=3)
    with pytest.raises(FinemixError, match="architectures differ|shape"):
        open_pair(bert.finetuned, tiny_pair_factory("roberta").pretrained)
    # a three-label head is a head: still pairs fine with the same encoder
    assert open_pair(other.finetuned, bert.pretrained).names.pairs


def test_resized_vocabulary_is_named(tmp_path, bert_pair):
    from transformers import AutoModelForSequenceClassification

    folder = tmp_path / "resized"
    model = AutoModelForSequenceClassification.from_pretrained(bert_pair.finetuned)
    model.resize_token_embeddings(model.config.vocab_size + 3)
    model.config.vocab_size = model.config.vocab_size  # keep config consistent with the weights
    model.save_pretrained(folder)
    with pytest.raises(FinemixError, match="vocabularies differ"):
        open_pair(folder, bert_pair.pretrained)


def test_missing_weights_and_config_are_named(tmp_path, bert_pair):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FinemixError, match="config.json"):
        open_pair(empty, bert_pair.pretrained)
    shutil.copy(bert_pair.finetuned / "config.json", empty / "config.json")
    with pytest.raises(FinemixError, match="no model weights"):
        open_pair(empty, bert_pair.pretrained)


def test_truncated_safetensors_is_named(tmp_path, bert_pair):
    broken = tmp_path / "broken"
    shutil.copytree(bert_pair.finetuned, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(FinemixError, match="model.safetensors"):
        open_pair(broken, bert_pair.pretrained)


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out) as folder:
            (folder / "partial").write_text("x")
            raise RuntimeError("boom")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_refuses_non_empty_without_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old").write_text("keep me")
    with pytest.raises(FinemixError, match="--force"):
        with atomic_output_dir(out):
            pass
    assert (out / "old").read_text() == "keep me"
    with atomic_output_dir(out, force=True) as folder:
        (folder / "new").write_text("n")
    assert sorted(p.name for p in out.iterdir()) == ["new"]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_stale_temporary_is_cleaned(tmp_path):
    stale = tmp_path / ".out.abc.finemix-tmp"
    stale.mkdir()
    (stale / TEMP_MARKER).write_text("")
    with atomic_output_dir(tmp_path / "out") as folder:
        (folder / "x").write_text("1")
    assert not stale.exists()


def test_output_inside_input_is_refused(tmp_path, bert_pair):
    with pytest.raises(FinemixError, match="overlaps"):
        mix_checkpoint(bert_pair.finetuned, bert_pair.pretrained, bert_pair.finetuned / "out", MixConfig(ratio=0.5))


def test_bin_checkpoint_with_code_is_refused(tmp_path, bert_pair):
    """A pickle that would run code on load is refused by weights_only=True."""
    import os

    evil = tmp_path / "evil"
    shutil.copytree(bert_pair.finetuned, evil)
    (evil / "model.safetensors").unlink()
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"bert.embeddings.word_embeddings.weight": Payload()}, evil / "pytorch_model.bin")
    with pytest.raises(FinemixError, match="refused or unreadable"):
        TensorReader(evil)
    assert not marker.exists()


def test_same_tokenizer_files(tmp_path, bert_pair):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(bert_pair.pretrained, a)
    shutil.copytree(bert_pair.pretrained, b)
    assert same_tokenizer_files(a, b)
    (b / "vocab.txt").write_text((b / "vocab.txt").read_text() + "extra\n")
    assert not same_tokenizer_files(a, b)
    (b / "vocab.txt").unlink()
    assert not same_tokenizer_files(a, b)  # one side lacks a file: unsure, so load and compare
    assert not same_tokenizer_files(bert_pair.finetuned / "missing", a)


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from(["float32", "bfloat16", "float16", "float64"]), size=st.integers(0, 300),
       bad=st.sampled_from([None, "nan", "inf", "-inf"]), where=st.floats(0.0, 1.0), seed=st.integers(0, 10_000),
       scale=st.sampled_from([1.0, 1e4, 6e4]))
def test_all_finite_finds_every_nan_and_inf_in_every_float_dtype(dtype, size, bad, where, seed, scale):
    """16-bit floats are checked on their exponent bits, the others by a sum confirmed element-wise: both
    agree with torch.isfinite, also for large finite values whose sum overflows."""
    import torch

    from finemix.weights.reader import all_finite

    tensor = (torch.randn(size, generator=torch.Generator().manual_seed(seed)) * scale).to(getattr(torch, dtype))
    if bad and size:
        tensor[min(size - 1, int(where * size))] = float(bad)
    assert all_finite(tensor) == bool(torch.isfinite(tensor).all())
    strided = tensor[::2]  # not contiguous
    assert all_finite(strided) == bool(torch.isfinite(strided).all())


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_all_finite_checks_16_bit_floats_across_its_blocks(dtype, monkeypatch):
    import torch

    import finemix.weights.reader as reader

    monkeypatch.setattr(reader, "_FINITE_BLOCK", 7)
    for size in (1, 7, 8, 23):
        assert reader.all_finite(torch.ones(size, dtype=getattr(torch, dtype)))
        for where in range(size):
            for bad in ("nan", "inf", "-inf"):
                tensor = torch.ones(size, dtype=getattr(torch, dtype))
                tensor[where] = float(bad)
                assert not reader.all_finite(tensor), (size, where, bad)


def test_all_finite_confirms_an_overflowing_sum_element_wise():
    import torch

    from finemix.weights.reader import all_finite

    huge = torch.full((4,), 3e38)  # finite values whose float32 sum is Inf
    assert all_finite(huge) and all_finite(huge.double()) and not all_finite(torch.cat([huge, torch.tensor([float("nan")])]))
