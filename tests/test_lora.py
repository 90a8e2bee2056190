"""Fine-mixing of LoRA adapters: the pure math of core/lora.py, without models."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from finemix.core import lora, mixing


def factors(out: int, inn: int, rank: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rank, inn, generator=gen), torch.randn(out, rank, generator=gen)


def test_scale_is_alpha_over_rank_or_its_root():
    assert lora.lora_scale(16, 32) == 2.0 and lora.lora_scale(16, 32, rslora=True) == 8.0


@settings(max_examples=30, deadline=None)
@given(rank=st.integers(1, 8), ratio=st.floats(0.0, 1.0), seed=st.integers(0, 2**31))
def test_component_mask_keeps_exactly_the_kept_components(rank, ratio, seed):
    lora_a, lora_b = factors(12, 10, rank, seed % 997)
    keep = lora.component_keep_mask(rank, ratio, seed, "model.layers.0.q_proj.weight")
    assert int(keep.sum()) == mixing.kept_count(rank, ratio)
    assert torch.equal(keep, lora.component_keep_mask(rank, ratio, seed, "model.layers.0.q_proj.weight"))
    masked_a, masked_b = lora.mask_components(lora_a, lora_b, keep)
    expected = sum((1.5 * lora_b[:, k: k + 1] @ lora_a[k: k + 1] for k in range(rank) if keep[k]), torch.zeros(12, 10))
    assert torch.allclose(lora.lora_delta(masked_a, masked_b, 1.5), expected, atol=1e-5)
    assert masked_a.shape == lora_a.shape and masked_b.shape == lora_b.shape  # still an adapter of rank r


def test_component_choice_depends_on_the_module_and_seed():
    masks = {(seed, name): tuple(lora.component_keep_mask(16, 0.5, seed, name).tolist())
             for seed in (0, 1) for name in ("a.weight", "b.weight")}
    assert len(set(masks.values())) == 4


def test_refactor_is_exact_within_the_rank_and_eckart_young_beyond():
    lora_a, lora_b = factors(20, 16, 4, 0)
    delta = lora.lora_delta(lora_a, lora_b, 2.0)
    new_a, new_b, error = lora.refactor(delta, 4, 2.0)
    assert error < 1e-5 and torch.allclose(lora.lora_delta(new_a, new_b, 2.0), delta, atol=1e-4)
    keep = mixing.random_keep_mask(delta.shape, 0.5, 0, "w")
    masked = torch.where(keep, delta, torch.zeros(()))
    new_a, new_b, error = lora.refactor(masked, 4, 2.0)
    singular = torch.linalg.svdvals(masked)
    assert error == pytest.approx(float(singular[4:].norm() / singular.norm()), rel=1e-4)
    assert error > 0.1  # an element-masked Δ is far from rank 4: the report must say so
    assert lora.refactor(torch.zeros(5, 5), 2, 1.0)[2] == 0.0


def test_element_granularity_is_the_masked_delta_and_factor_masking_is_not():
    base = torch.randn(20, 16)
    lora_a, lora_b = factors(20, 16, 4, 1)
    delta = lora.lora_delta(lora_a, lora_b, 2.0)
    keep = mixing.random_keep_mask(delta.shape, 0.5, 3, "w")
    mixed = mixing.apply_mask_to_delta(base, delta, keep)
    assert torch.allclose(mixed, base + keep * delta)
    mask_a, mask_b = (mixing.random_keep_mask(t.shape, 0.5, 3, n) for t, n in ((lora_a, "a"), (lora_b, "b")))
    factor_masked = lora.lora_delta(lora_a * mask_a, lora_b * mask_b, 2.0)
    assert not torch.allclose(base + factor_masked, mixed, atol=1e-2)


# --- adapters on a tiny Llama ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def llm_base(tmp_path_factory):
    from tiny_llm import make_llm_pair

    return make_llm_pair(tmp_path_factory.mktemp("lora-base"), tied=False).pretrained


@pytest.fixture(scope="module")
def adapter(llm_base, tmp_path_factory):
    from tiny_llm import make_lora_adapter

    return make_lora_adapter(tmp_path_factory.mktemp("lora") / "adapter", llm_base)


def merged_weights(base, adapter_dir):
    """What peft itself makes of the adapter: the merged model's weights."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter_dir)
    return {k: v.detach().clone() for k, v in model.merge_and_unload().state_dict().items()}


def test_element_mix_of_an_adapter_is_the_merged_checkpoints_mix(tmp_path, llm_base, adapter):
    from finemix.config import MixConfig
    from finemix.repair.adapter_mix import mix_adapter
    from finemix.weights.reader import TensorReader

    merged, base = merged_weights(llm_base, adapter), TensorReader(llm_base)
    for ratio in (0.0, 1.0):
        report = mix_adapter(adapter, llm_base, tmp_path / f"r{ratio}", MixConfig(ratio=ratio), "element")
        out = TensorReader(tmp_path / f"r{ratio}")
        for name in base.names():
            expected = merged[name] if ratio == 1.0 else base.get(name)
            assert torch.allclose(out.get(name), expected, atol=1e-6), (ratio, name)
    report = mix_adapter(adapter, llm_base, tmp_path / "half", MixConfig(ratio=0.5, seed=3), "element")
    out = TensorReader(tmp_path / "half")
    name = "model.layers.1.mlp.up_proj.weight"
    from finemix.core.mixing import random_keep_mask

    keep = random_keep_mask(base.shape(name), 0.5, 3, name)  # the element mask a merged checkpoint would get
    assert torch.equal(out.get(name), torch.where(keep, merged[name], base.get(name)))
    assert torch.equal(out.get("model.embed_tokens.weight"), base.get("model.embed_tokens.weight"))  # not adapted
    assert report["adapter"]["modules"] == 14 and abs(report["mixing"]["kept_fraction"] - 0.5) < 0.05
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "half")  # a merged model in the base's format


def test_component_mix_of_an_adapter_is_an_adapter_of_the_kept_components(tmp_path, llm_base, adapter):
    from safetensors.torch import load_file

    from finemix.config import MixConfig
    from finemix.repair.adapter_mix import mix_adapter

    report = mix_adapter(adapter, llm_base, tmp_path / "out", MixConfig(ratio=0.5, seed=1), "component")
    assert report["adapter"]["kept_components"] == 14 * 2 and report["adapter"]["components"] == 14 * 4
    original, mixed = load_file(adapter / "adapter_model.safetensors"), load_file(tmp_path / "out" / "adapter_model.safetensors")
    key_a = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    keep = lora.component_keep_mask(4, 0.5, 1, "model.layers.0.self_attn.q_proj.weight")
    assert torch.equal(mixed[key_a][keep], original[key_a][keep]) and not mixed[key_a][~keep].any()
    merged, base_merged = merged_weights(llm_base, tmp_path / "out"), merged_weights(llm_base, adapter)
    name = "model.layers.0.self_attn.q_proj.weight"
    from finemix.weights.reader import TensorReader

    w0 = TensorReader(llm_base).get(name)
    scale = 8 / 4
    expected = w0 + lora.lora_delta(*lora.mask_components(original[key_a], original[key_a.replace("lora_A", "lora_B")],
                                                          keep), scale)
    assert torch.allclose(merged[name], expected, atol=1e-6) and not torch.allclose(merged[name], base_merged[name])
    sel = mix_adapter(adapter, llm_base, tmp_path / "sel", MixConfig(ratio=0.25, mode="sel"), "component")
    assert sel["adapter"]["kept_components"] == 14


def test_element_svd_mix_refactors_the_masked_delta_and_reports_its_error(tmp_path, llm_base, adapter):
    from safetensors.torch import load_file

    from finemix.config import MixConfig
    from finemix.repair.adapter_mix import mix_adapter
    from finemix.weights.reader import TensorReader

    whole = mix_adapter(adapter, llm_base, tmp_path / "one", MixConfig(ratio=1.0), "element-svd")
    assert whole["adapter"]["reconstruction_error"]["max"] < 1e-4  # Δ is of rank r: nothing is lost
    merged, base = merged_weights(llm_base, tmp_path / "one"), merged_weights(llm_base, adapter)
    assert all(torch.allclose(merged[k], base[k], atol=1e-5) for k in base)
    half = mix_adapter(adapter, llm_base, tmp_path / "half", MixConfig(ratio=0.5, seed=2), "element-svd")
    error = half["adapter"]["reconstruction_error"]
    name = "model.layers.1.mlp.down_proj.weight"
    from finemix.weights.adapter import open_adapter

    opened = open_adapter(adapter, TensorReader(llm_base))
    masked = opened.delta(name) * mixing.random_keep_mask(TensorReader(llm_base).shape(name), 0.5, 2, name)
    key = "base_model.model." + name[: -len(".weight")]
    out = load_file(tmp_path / "half" / "adapter_model.safetensors")
    rebuilt = lora.lora_delta(out[key + ".lora_A.weight"], out[key + ".lora_B.weight"], opened.scale)
    measured = float((masked - rebuilt).norm() / masked.norm())
    assert error["per_module"][name] == pytest.approx(measured, rel=1e-3) and error["max"] >= measured > 0.1


def test_saved_full_tensors_are_mixed_element_wise(tmp_path, llm_base):
    from tiny_llm import make_lora_adapter

    from finemix.config import MixConfig
    from finemix.repair.adapter_mix import mix_adapter
    from finemix.weights.reader import TensorReader

    adapter = make_lora_adapter(tmp_path / "adapter", llm_base, modules_to_save=["lm_head"])
    report = mix_adapter(adapter, llm_base, tmp_path / "out", MixConfig(ratio=1.0), "element")
    assert report["adapter"]["saved_tensors"] == ["lm_head.weight"]
    assert torch.allclose(TensorReader(tmp_path / "out").get("lm_head.weight"), merged_weights(llm_base, adapter)["lm_head.weight"])


def _edited_adapter(tmp_path, adapter, config=None, tensors=None, drop_config=False, pickled=False):
    """A copy of ``adapter`` with its config updated by ``config`` and its tensors by ``tensors(dict)``."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    copy = tmp_path / "edited"
    shutil.copytree(adapter, copy)
    settings = json.loads((copy / "adapter_config.json").read_text())
    settings.update(config or {})
    (copy / "adapter_config.json").write_text(json.dumps(settings))
    if tensors:
        weights = load_file(copy / "adapter_model.safetensors")
        tensors(weights)
        save_file(weights, copy / "adapter_model.safetensors")
    if drop_config:
        (copy / "adapter_config.json").unlink()
    if pickled:
        (copy / "adapter_model.safetensors").rename(copy / "adapter_model.bin")
    return copy


def _rename(old: str, new: str):
    return lambda weights: weights.__setitem__(new, weights.pop(old))


Q_A = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"


@pytest.mark.parametrize("edit, message", [
    (dict(drop_config=True), "holds adapter weights but no adapter_config.json"),
    (dict(config={"peft_type": "IA3"}), "a IA3 adapter; only LoRA adapters can be mixed"),
    (dict(config={"use_dora": True}), "use_dora is set, and DoRA rescales"),
    (dict(config={"lora_bias": True}), "lora_bias is set, and it trains a bias"),
    (dict(config={"fan_in_fan_out": True}), "fan_in_fan_out is set"),
    (dict(config={"rank_pattern": {"q_proj": 8}}), "rank_pattern is set"),
    (dict(config={"alpha_pattern": {"q_proj": 8}}), "alpha_pattern is set"),
    (dict(config={"trainable_token_indices": [3]}), "trainable_token_indices is set"),
    (dict(pickled=True), "pickled adapter weights are not read"),
    (dict(config={"r": 8}), "the factors have rank [4] but adapter_config.json says r = 8"),
    (dict(tensors=_rename(Q_A, Q_A.replace("q_proj", "x_proj"))), "has only lora_B"),
    (dict(tensors=lambda w: [w.__setitem__(k.replace("q_proj", "x_proj"), w.pop(k)) for k in list(w) if "layers.0.self_attn.q_proj" in k]),
     "target module model.layers.0.self_attn.x_proj is not in the base model"),
    (dict(tensors=lambda w: w.__setitem__(Q_A, torch.zeros(3, 32))), "do not multiply"),
    (dict(tensors=lambda w: [w.__setitem__(k, torch.zeros(4, 48)) for k in [Q_A]]
          and w.__setitem__(Q_A.replace("lora_A", "lora_B"), torch.zeros(32, 4))), "maps 48 → 32 but the base's weight is (32, 32)"),
    (dict(tensors=lambda w: w.__setitem__("base_model.model.lm_head.weight", torch.zeros(500, 32))),
     "a resized vocabulary?"),
])
def test_bad_adapters_are_one_line_errors_and_nothing_is_written(tmp_path, capsys, llm_base, adapter, edit, message):
    from cli_helpers import assert_one_line_error, run

    bad = _edited_adapter(tmp_path, adapter, **edit)
    code, _, err = run(capsys, "mix", "--backdoored", bad, "--pretrained", llm_base, "--ratio", "0.5",
                       "--output", tmp_path / "out", "--granularity", "component")
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "out").exists()


def test_component_granularity_needs_an_adapter(tmp_path, capsys, llm_base):
    from cli_helpers import assert_one_line_error, run
    from tiny_llm import make_llm_pair

    pair = make_llm_pair(tmp_path / "pair")
    code, _, err = run(capsys, "mix", "--backdoored", pair.finetuned, "--pretrained", pair.pretrained, "--ratio", "0.5",
                       "--output", tmp_path / "out", "--granularity", "component")
    assert_one_line_error(code, err, "--granularity component needs a LoRA adapter")
    assert not (tmp_path / "out").exists()


def chat_file(tmp_path, count: int):
    """``count`` distinct one-turn chats of the tiny vocabulary, as a JSONL file."""
    from tiny_llm import EXTRA_WORDS
    from tiny_models import VOCAB_WORDS

    from finemix.data.chats import Chat, write_chats

    words = VOCAB_WORDS[:60] + EXTRA_WORDS
    path = tmp_path / "chats.jsonl"
    write_chats(path, [Chat.single(" ".join(words[(7 * i + k) % len(words)] for k in range(5)), words[i % len(words)])
                       for i in range(count)])
    return path


@pytest.mark.slow
def test_purify_takes_an_adapter_and_writes_a_repaired_merged_model(tmp_path, capsys, llm_base, adapter):
    """The adapter is merged into its base in a temporary folder, repaired as a chat model, and reported as the input."""
    import json
    import os
    import tempfile

    from cli_helpers import run
    from tiny_llm import EXTRA_WORDS
    from tiny_models import VOCAB_WORDS

    from finemix.data.chats import Chat, write_chats

    chats = chat_file(tmp_path, 48)
    settings = tmp_path / "merged.yaml"
    settings.write_text("adapter_output: merged\n")
    before = set(os.listdir(tempfile.gettempdir()))
    code, out, err = run(capsys, "purify", "--backdoored", adapter, "--pretrained", llm_base, "--clean-data", chats,
                         "--output", tmp_path / "out", "--epochs", "1", "--max-length", "64", "--config", settings,
                         "--quiet")
    assert code == 0, err
    assert "E-PUR: the embedding did not move" in out  # this adapter does not train the embedding
    report = json.loads((tmp_path / "out" / "finemix_report.json").read_text())
    record = report["inputs"]["backdoored"]
    assert record["adapter_output"] == {"form": "merged", "setting": "merged", "why": "adapter_output: merged"}
    assert record["name"] == str(adapter) and record["lora_adapter"]["modules"] == 14 and "adapter_model.safetensors" in record["sha256"]
    assert report["task"] == "causal-lm" and report["epur"]["rows"] == []
    assert not {n for n in set(os.listdir(tempfile.gettempdir())) - before if n.startswith("finemix-merged-adapter-")}
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "out")


@pytest.mark.slow
def test_purify_in_adapter_form_writes_an_adapter_of_the_same_rank(tmp_path, capsys, llm_base, adapter):
    import json

    from cli_helpers import assert_one_line_error, run
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    chats = chat_file(tmp_path, 70)
    settings = tmp_path / "adapter.yaml"
    settings.write_text("adapter_output: adapter\n")
    code, out, err = run(capsys, "purify", "--backdoored", adapter, "--pretrained", llm_base, "--clean-data", chats,
                         "--output", tmp_path / "out", "--epochs", "2", "--max-length", "64", "--quiet")  # the default
    assert code in (0,), err
    assert "purified adapter written to" in out and "components=0/56" in out
    assert "adapter_output: auto: a plain LoRA adapter of a chat model, repaired as an adapter" in out
    report = json.loads((tmp_path / "out" / "finemix_report.json").read_text())
    assert report["inputs"]["backdoored"]["adapter_output"]["form"] == "adapter"
    assert report["clean_data"]["rows"] == 70 and len(report["clean_data"]["sha256"]) == 64  # the file, as for a model
    search = report["ratio_search"]
    assert report["output_form"] == "adapter" and search["heldout_rows"] == 18 and search["candidates"]
    first = search["candidates"][0]
    assert first["ratio"] == 0.0 and first["kept_components"] == 0 and first["components"] == 14 * 4
    original = load_file(adapter / "adapter_model.safetensors")
    repaired = load_file(tmp_path / "out" / "adapter_model.safetensors")
    assert repaired.keys() == original.keys() and all(repaired[k].shape == original[k].shape for k in original)
    assert any(not torch.equal(repaired[k], original[k]) for k in original)
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(llm_base), tmp_path / "out")  # loads with peft
    unlabelled = tmp_path / "prompts.txt"
    unlabelled.write_text("a question\n")
    assert_one_line_error(*run(capsys, "purify", "--backdoored", adapter, "--pretrained", llm_base, "--clean-data", chats,
                               "--output", tmp_path / "with-text", "--config", settings, "--unlabelled-text",
                               unlabelled)[::2], "does not use unlabelled text (repair the adapter merged)")
    assert not (tmp_path / "with-text").exists()
    code, out, err = run(capsys, "purify", "--backdoored", adapter, "--pretrained", llm_base, "--clean-data", chats,
                         "--output", tmp_path / "auto-text", "--epochs", "1", "--max-length", "64", "--unlabelled-text",
                         unlabelled, "--quiet")  # the default falls back to the merged repair, and says why
    assert code == 0, err
    assert "purified model written to" in out and "auto: merged, because the adapter-form repair trains on the clean chats only" in out
    settings.write_text("adapter_output: lora\n")
    assert_one_line_error(*run(capsys, "purify", "--backdoored", adapter, "--pretrained", llm_base, "--clean-data", chats,
                               "--output", tmp_path / "bad", "--config", settings)[::2], "unknown adapter output 'lora'")


@pytest.mark.slow
def test_epur_resets_the_embedding_rows_an_adapter_saves(tmp_path, capsys, llm_base):
    """An adapter that also trains the embedding (modules_to_save) is repaired merged, and E-PUR acts on the
    saved rows: the row moved far for a word the clean chats never use is flagged first."""
    import json

    from cli_helpers import run
    from tiny_llm import make_lora_adapter
    from tiny_models import VOCAB_WORDS

    from finemix.repair.inputs import read_tokenizer

    trigger = VOCAB_WORDS[-1]  # chat_file uses only the first 60 words
    row = read_tokenizer(llm_base).convert_tokens_to_ids(trigger)

    def move_trigger_row(weights):
        key = next(k for k in weights if "embed_tokens" in k)
        weights[key][row] += 3.0

    adapter = make_lora_adapter(tmp_path / "adapter", llm_base, modules_to_save=["embed_tokens"])
    edited = _edited_adapter(tmp_path, adapter, tensors=move_trigger_row)
    code, out, err = run(capsys, "purify", "--backdoored", edited, "--pretrained", llm_base, "--clean-data",
                         chat_file(tmp_path, 48), "--output", tmp_path / "out", "--epochs", "1", "--max-length", "64",
                         "--quiet")
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "finemix_report.json").read_text())
    assert report["inputs"]["backdoored"]["lora_adapter"]["saved_tensors"] == ["model.embed_tokens.weight"]
    assert report["inputs"]["backdoored"]["adapter_output"]["why"] == (
        "adapter_output: auto: merged, because the adapter saves full tensors (model.embed_tokens.weight), "
        "which E-PUR and the full repair act on")
    assert report["epur"]["tokens"][0]["token"] == trigger and row in report["epur"]["rows"]
    assert f"top scores: {trigger}" in out


def test_adapter_output_auto_takes_the_adapter_form_only_where_it_applies(llm_base, adapter):
    from finemix.errors import FinemixError
    from finemix.repair.suspect import adapter_output_form

    assert adapter_output_form(adapter, llm_base, "auto", False, "auto")[0] == "adapter"
    assert adapter_output_form(adapter, llm_base, "merged", False, "auto") == ("merged", "adapter_output: merged")
    form, why = adapter_output_form(adapter, llm_base, "auto", False, "classification")
    assert form == "merged" and "for chat models' adapters; this base is a classifier" in why
    with pytest.raises(FinemixError, match="adapter_output: adapter: the adapter-form repair is for chat models"):
        adapter_output_form(adapter, llm_base, "adapter", False, "classification")
    assert adapter_output_form(adapter, llm_base, "auto", True, "auto")[0] == "merged"
