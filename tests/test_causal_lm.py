"""The causal-LM task: chat rows, answer-only loss, held-out response loss, generation, and
``purify`` end to end on a tiny random Llama (tied and untied output matrix)."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest
import torch

from cli_helpers import assert_one_line_error, run
from finemix.config import EpurConfig, MixConfig, PurifyConfig, TrainConfig
from finemix.core.ratio_rule import loss_margin
from finemix.data.chats import Chat, load_chats, write_chats
from finemix.errors import FinemixError
from finemix.tasks import task_for_config, task_name_for_config
from finemix.tasks.causal_lm import (IGNORE, CAUSAL_LM, ChatCollator, chat_features, generate, load_causal_lm,
                                     response_losses)
from tiny_llm import make_chat_tokenizer, make_llm_pair
from tiny_models import VOCAB_WORDS


@pytest.fixture(scope="module")
def llm_pair(tmp_path_factory):
    return make_llm_pair(tmp_path_factory.mktemp("llm-tied"), moved_rows=(40,))


@pytest.fixture(scope="module")
def untied_pair(tmp_path_factory):
    return make_llm_pair(tmp_path_factory.mktemp("llm-untied"), tied=False, moved_rows=(40,))


@pytest.fixture(scope="module")
def tokenizer(llm_pair):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(llm_pair.finetuned)


def random_chats(count: int, seed: int = 0) -> list[Chat]:
    rng = random.Random(seed)
    words = VOCAB_WORDS[:150]
    return [Chat.single(" ".join(rng.choice(words) for _ in range(6)), " ".join(rng.choice(words) for _ in range(4)))
            for _ in range(count)]


# --- chat files -------------------------------------------------------------------------------

def write_lines(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_chat_files_alpaca_and_messages(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [
        {"instruction": "name a city", "input": "in france", "response": " paris "},
        {"instruction": "say yes", "output": "yes"},
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                      {"role": "assistant", "content": "hello"}]},
    ])
    chats = load_chats(path)
    assert chats[0] == Chat((("user", "name a city\n\nin france"),), "paris")
    assert chats[1].response == "yes"
    assert chats[2].prompt == (("system", "be brief"), ("user", "hi")) and chats[2].response == "hello"
    write_chats(tmp_path / "back.jsonl", chats)
    assert load_chats(tmp_path / "back.jsonl") == chats


@pytest.mark.parametrize("row, message", [
    ({"instruction": "x"}, "field 'response' is missing"),
    ({"instruction": "x", "response": "  "}, "field 'response' is empty"),
    ({"instruction": 3, "response": "y"}, "field 'instruction' is a JSON int"),
    ({"messages": []}, "non-empty list"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "last message must be a non-empty assistant answer"),
    ({"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "a"}]}, "message 0 must be"),
    ({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}, "no non-empty user"),
    ([1, 2], "a JSON list, expected an object"),
    ("{not json", "line 1 is not valid JSON"),
])
def test_bad_chat_rows_are_one_line_errors(tmp_path, row, message):
    with pytest.raises(FinemixError, match=message) as error:
        load_chats(write_lines(tmp_path / "bad.jsonl", [row]))
    assert "\n" not in str(error.value) and "line 1" in str(error.value)


def test_chat_data_must_be_jsonl(tmp_path):
    (tmp_path / "c.csv").write_text("instruction,response\nx,y\n", encoding="utf-8")
    with pytest.raises(FinemixError, match="must be a .jsonl file"):
        load_chats(tmp_path / "c.csv")


# --- features, loss, generation -----------------------------------------------------------------

def test_features_mask_the_prompt_and_keep_the_end_of_turn(tokenizer):
    chat = Chat.single("the movie was good", "yes great")
    feature = chat_features(tokenizer, [chat], max_length=64)[0]
    answer = [t for t, label in zip(feature["input_ids"], feature["labels"]) if label != IGNORE]
    # the answer and its end-of-turn token, nothing else
    assert answer == tokenizer("yes great", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert feature["labels"][: len(feature["labels"]) - len(answer)] == [IGNORE] * (len(feature["labels"]) - len(answer))


def test_collator_pads_by_mask_not_by_id(tokenizer):
    # pad = eos here: the answer's own <|im_end|> must keep its label while padding is masked
    features = chat_features(tokenizer, [Chat.single("a", "yes"), Chat.single("the movie was good", "no")], 64)
    batch = ChatCollator(tokenizer)(features)
    short = 0 if len(features[0]["input_ids"]) < len(features[1]["input_ids"]) else 1
    n = len(features[short]["input_ids"])
    assert batch["attention_mask"][short, n:].eq(0).all() and batch["labels"][short, n:].eq(IGNORE).all()
    assert batch["labels"][short, n - 1] == tokenizer.eos_token_id


def test_response_loss_matches_the_model_loss(llm_pair, tokenizer):
    model = load_causal_lm(llm_pair.finetuned)
    chats = random_chats(3)
    pairs = response_losses(model, tokenizer, chats, max_length=64, batch_size=2)  # padded batches
    for chat, (total, tokens) in zip(chats, pairs):
        batch = ChatCollator(tokenizer)(chat_features(tokenizer, [chat], 64))
        with torch.no_grad():
            expected = model(**batch).loss.item()
        assert math.isclose(total / tokens, expected, rel_tol=1e-4)


def test_batched_left_padded_generation_equals_one_by_one(llm_pair, tokenizer):
    model = load_causal_lm(llm_pair.finetuned)
    chats = [Chat.single("a"), Chat.single("the movie was really good and fun"), Chat.single("cf the film")]
    together = generate(model, tokenizer, chats, max_new_tokens=6, batch_size=3)
    alone = [generate(model, tokenizer, [chat], max_new_tokens=6)[0] for chat in chats]
    assert together == alone and all(together)


def test_long_prompt_and_missing_template_are_refused(tmp_path, tokenizer):
    with pytest.raises(FinemixError, match="chat 1: its prompt is .* tokens, leaving no room"):
        chat_features(tokenizer, [Chat.single(" ".join(["movie"] * 40), "yes")], max_length=16)
    bare = make_chat_tokenizer(tmp_path / "bare", chat_template=None)
    with pytest.raises(FinemixError, match="no chat template"):
        chat_features(bare, [Chat.single("a", "b")], 64)


def test_loss_margin_reads_tolerance_as_perplexity():
    assert math.isclose(math.exp(loss_margin(0.05)), 1.05, rel_tol=1e-5)
    assert loss_margin(0.0) == 0.0


def test_task_is_read_from_the_config():
    assert task_name_for_config({"architectures": ["LlamaForCausalLM"]}) == "causal-lm"
    assert task_name_for_config({"architectures": ["BertForSequenceClassification"]}) == "classification"
    assert task_name_for_config({"architectures": ["BertModel"]}) == "classification"  # its loader's errors follow
    with pytest.raises(FinemixError, match="--task causal-lm but its config.json declares a classification"):
        task_for_config({"architectures": ["BertForSequenceClassification"]}, name="causal-lm")
    with pytest.raises(FinemixError, match="--task classification but its config.json declares a causal-lm"):
        task_for_config({"architectures": ["LlamaForCausalLM"]}, name="classification")
    assert task_for_config({}, name="causal-lm") is CAUSAL_LM


# --- purify ---------------------------------------------------------------------------------------

def quick_config(**changes) -> PurifyConfig:
    train = TrainConfig(epochs=2, batch_size=8, max_length=64, progress=False, min_eval_rows=8)
    return PurifyConfig(train=train, epur=EpurConfig(top_n=3), **changes)


@pytest.mark.slow
@pytest.mark.parametrize("pair_name", ["llm_pair", "untied_pair"])
def test_purify_a_chat_model(request, tmp_path, pair_name):
    from finemix.repair.steps import purify
    from finemix.weights.reader import TensorReader

    pair = request.getfixturevalue(pair_name)
    report = purify(pair.finetuned, pair.pretrained, random_chats(48), tmp_path / "out", quick_config())
    assert report["task"] == "causal-lm"
    search = report["ratio_search"]
    assert search["measure"] == "negated held-out response loss" and search["heldout_rows"] == 12
    assert search["reference_heldout_accuracy"] < 0 and search["candidates"][0]["heldout_accuracy"] is not None
    assert report["epur"]["rows"][0] == 40  # the row moved far more than the others
    assert report["epur"]["also_reset"] == ([] if pair_name == "llm_pair" else ["lm_head.weight"])
    model = load_causal_lm(tmp_path / "out")  # loads as a causal LM, every weight present
    assert model.config.tie_word_embeddings == (pair_name == "llm_pair")
    assert set(TensorReader(tmp_path / "out").names()) == set(TensorReader(pair.finetuned).names())
    assert "label_counts" not in report["clean_data"]
    assert "48 clean chats (loss on the answers)" in (tmp_path / "out" / "README.md").read_text()


@pytest.mark.parametrize("pair_name", ["llm_pair", "untied_pair"])
def test_epur_resets_the_row_in_the_embedding_and_an_untied_output_matrix(request, tmp_path, pair_name):
    """E-PUR alone (ρ = 1, no fine-tuning): the flagged rows equal θ_Pre's, every other weight is θ_B's."""
    from finemix.repair.steps import purify
    from finemix.weights.reader import TensorReader

    pair = request.getfixturevalue(pair_name)
    config = quick_config(mix=MixConfig(ratio=1.0), ratio_auto=False, finetune=False)
    report = purify(pair.finetuned, pair.pretrained, random_chats(16), tmp_path / "out", config)
    rows = torch.tensor(report["epur"]["rows"])
    out, pre, ft = (TensorReader(p) for p in (tmp_path / "out", pair.pretrained, pair.finetuned))
    for name in ["model.embed_tokens.weight"] + report["epur"]["also_reset"]:
        assert torch.equal(out.get(name)[rows], pre.get(name)[rows])
        others = torch.ones(out.get(name).shape[0], dtype=torch.bool)
        others[rows] = False
        assert torch.equal(out.get(name)[others], ft.get(name)[others])
    if pair_name == "untied_pair":  # the output matrix of the flagged token was moved too and is now reset
        assert not torch.equal(ft.get("lm_head.weight")[rows], pre.get("lm_head.weight")[rows])


@pytest.mark.slow
def test_cli_purify_on_chats_and_its_errors(tmp_path, llm_pair, capsys):
    chats = tmp_path / "chats.jsonl"
    write_chats(chats, random_chats(40))

    def purify_cli(backdoored, data, output, *extra):
        return run(capsys, "purify", "--backdoored", backdoored, "--pretrained", llm_pair.pretrained,
                   "--clean-data", data, "--quiet", "--epochs", "1", "--max-length", "64", "--output", output, *extra)

    code, out, err = purify_cli(llm_pair.finetuned, chats, tmp_path / "out")
    assert code == 0, err
    assert "held-out loss=" in out
    assert json.loads((tmp_path / "out" / "finemix_report.json").read_text())["task"] == "causal-lm"

    rows = tmp_path / "rows.csv"
    rows.write_text("text,label\na,0\n", encoding="utf-8")
    assert_one_line_error(*purify_cli(llm_pair.finetuned, rows, tmp_path / "bad")[::2], "must be a .jsonl file")
    assert_one_line_error(*purify_cli(llm_pair.finetuned, chats, tmp_path / "wrong", "--task", "classification")[::2],
                          "declares a causal-lm model")

    no_template = tmp_path / "no-template"
    shutil.copytree(llm_pair.finetuned, no_template)
    (no_template / "chat_template.jinja").unlink()
    config = json.loads((no_template / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (no_template / "tokenizer_config.json").write_text(json.dumps(config))
    assert_one_line_error(*purify_cli(no_template, chats, tmp_path / "none")[::2], "no chat template")
    assert not any((tmp_path / name).exists() for name in ("bad", "wrong", "none"))


def test_a_packaged_gguf_is_converted_once_into_the_cache(tmp_path, monkeypatch):
    """weights/gguf.converted_gguf: one conversion per cache folder, written atomically (the
    conversion itself, transformers' GGUF reader, is replaced here: the 135M model takes 20 s)."""
    import finemix.weights.gguf as gguf

    calls = []

    def fake_convert(source, folder):
        calls.append(source)
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")

    monkeypatch.setenv("FINEMIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(gguf, "_convert", fake_convert)
    first = gguf.converted_gguf("org/model", tmp_path / "model.gguf")
    again = gguf.converted_gguf("org/model", tmp_path / "model.gguf")
    assert first == again == tmp_path / "cache" / "models" / "org--model" and len(calls) == 1
    assert [p.name for p in first.parent.iterdir()] == ["org--model"]  # no temporary folder left

    def broken(source, folder):
        folder.mkdir(parents=True)
        raise RuntimeError("disk full")

    monkeypatch.setattr(gguf, "_convert", broken)
    with pytest.raises(RuntimeError):
        gguf.converted_gguf("org/other", tmp_path / "model.gguf")
    assert [p.name for p in first.parent.iterdir()] == ["org--model"]  # nothing half-written kept


# --- bad inputs of the chat surface (docs/reliability.md) -----------------------------------------

def _purify_cli(capsys, backdoored, pretrained, data, output, *extra):
    return run(capsys, "purify", "--backdoored", backdoored, "--pretrained", pretrained, "--clean-data", data,
               "--quiet", "--epochs", "1", "--max-length", "64", "--output", output, *extra)


def _chats_file(tmp_path, rows=None) -> Path:
    path = tmp_path / "chats.jsonl"
    if rows is None:
        write_chats(path, random_chats(24))
    else:
        write_lines(path, rows)
    return path


def test_a_chat_model_against_a_classifier_is_refused(tmp_path, llm_pair, bert_pair, capsys):
    code, _, err = _purify_cli(capsys, llm_pair.finetuned, bert_pair.pretrained, _chats_file(tmp_path), tmp_path / "o")
    assert_one_line_error(code, err, "architectures differ")
    assert not (tmp_path / "o").exists()


def test_a_broken_chat_template_is_a_one_line_error(tmp_path, llm_pair, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(llm_pair.finetuned, broken)
    (broken / "chat_template.jinja").write_text("{% for message in messages %}{{ message['content'] }")
    code, _, err = _purify_cli(capsys, broken, llm_pair.pretrained, _chats_file(tmp_path), tmp_path / "o")
    assert_one_line_error(code, err, "chat template")
    assert not (tmp_path / "o").exists()


def test_tokenizers_that_differ_are_refused(tmp_path, llm_pair, capsys):
    other = tmp_path / "other"
    shutil.copytree(llm_pair.finetuned, other)
    vocabulary = json.loads((other / "tokenizer.json").read_text())
    words = vocabulary["model"]["vocab"]
    first, second = "movie", "film"
    words[first], words[second] = words[second], words[first]  # same size, two ids swapped
    (other / "tokenizer.json").write_text(json.dumps(vocabulary))
    code, _, err = _purify_cli(capsys, other, llm_pair.pretrained, _chats_file(tmp_path), tmp_path / "o")
    assert_one_line_error(code, err, "tokeniz")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("row, message", [
    ({"instruction": "the movie"}, "field 'response' is missing"),
    ({"instruction": "the movie", "response": ""}, "field 'response' is empty"),
    ({"messages": [{"role": "user", "content": "the movie"}, {"role": "assistant", "content": ""}]},
     "non-empty assistant answer"),
])
def test_chat_rows_without_an_answer_are_refused_by_purify(tmp_path, llm_pair, capsys, row, message):
    data = _chats_file(tmp_path, [{"instruction": "a b", "response": "c"}, row])
    code, _, err = _purify_cli(capsys, llm_pair.finetuned, llm_pair.pretrained, data, tmp_path / "o")
    assert_one_line_error(code, err, "line 2", message)
    assert not (tmp_path / "o").exists()


def test_a_prompt_longer_than_the_context_is_refused_by_purify(tmp_path, llm_pair, capsys):
    rows = [{"instruction": " ".join(["movie"] * 200), "response": "yes"}] + [{"instruction": "a b", "response": "c"}] * 3
    code, _, err = _purify_cli(capsys, llm_pair.finetuned, llm_pair.pretrained, _chats_file(tmp_path, rows),
                               tmp_path / "o")
    assert_one_line_error(code, err, "chat 1: its prompt is", "--max-length 64")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("patience, measures, trained", [
    (1, [-2.0, -2.5, -1.0, -0.5, -0.1], 2),  # epoch 2 is worse than epoch 1: stop there, keep epoch 1
    (2, [-2.0, -2.5, -1.0, -0.5, -0.1], 5),  # epoch 3 improves within the patience: train on
    (0, [-2.0, -2.5, -3.0, -3.5, -4.0], 5),  # 0: never stop early
    (None, [-2.0, -2.5, -3.0, -3.5, -4.0], 2),  # None: the task's default (1 for chat models)
])
def test_patience_stops_training_when_the_held_out_measure_stops_improving(llm_pair, tokenizer, patience, measures,
                                                                           trained):
    from finemix.tasks.causal_lm import CausalLMTask
    from finemix.train import finetune

    class Scripted(CausalLMTask):
        def __init__(self):
            self.values = iter(measures)

        def clean_measure(self, model, tokenizer, rows, max_length):
            return next(self.values)

    model = load_causal_lm(llm_pair.finetuned)
    config = TrainConfig(epochs=5, batch_size=8, max_length=64, progress=False, patience=patience)
    result = finetune(model, tokenizer, random_chats(16), config, eval_set=random_chats(4, 1), task=Scripted())
    assert len(result.eval_accuracy) == trained and result.stopped_early == (trained < 5)
    assert result.best_epoch == 1 + max(range(trained), key=lambda i: (measures[i], -i))


# --- distilling the suspect's answers ---------------------------------------------------------------

class ScriptedModel(torch.nn.Module):
    """A stand-in causal LM whose greedy continuation of row i is ``script[i]``, padded with ``pad``."""

    def __init__(self, script, pad):
        super().__init__()
        self.weight, self.script, self.pad = torch.nn.Parameter(torch.zeros(1)), script, pad

    def generate(self, input_ids, attention_mask, max_new_tokens, do_sample, pad_token_id):
        rows = [list(r) + [self.pad] * (max_new_tokens - len(r)) for r in self.script[: len(input_ids)]]
        self.script = self.script[len(input_ids):]
        return torch.cat([input_ids, torch.tensor(rows)[:, :max_new_tokens]], dim=1)


def test_generation_of_complete_answers_only_drops_the_answers_cut_short(tokenizer):
    from finemix.tasks.causal_lm import suspect_answers

    word = tokenizer.convert_tokens_to_ids(VOCAB_WORDS[5])
    eos = tokenizer.eos_token_id
    prompts = ["the film", "a story", "one plot"]  # equal lengths: generation keeps their order
    script = [[word, eos], [word, word, word], [eos]]
    answers = generate(ScriptedModel(script, eos), tokenizer, [Chat.single(p) for p in prompts], max_new_tokens=3,
                       complete_only=True)
    assert answers == [VOCAB_WORDS[5], None, ""]
    chats = suspect_answers(ScriptedModel(script, eos), tokenizer, prompts + ["the film"], 3, max_length=64)
    assert chats == [Chat.single("the film", VOCAB_WORDS[5])]  # the cut answer and the empty one are not taught


@pytest.mark.slow
def test_purify_a_chat_model_learns_from_the_suspects_answers_to_unlabelled_prompts(tmp_path, llm_pair, monkeypatch):
    import finemix.tasks.causal_lm as causal_lm
    import finemix.train as train
    from finemix.repair.steps import purify

    def scripted_generate(model, tokenizer, chats, max_new_tokens, max_length, complete_only):
        assert complete_only and max_new_tokens == 7
        return [f"answer {i}" if i % 2 == 0 else None for i, _ in enumerate(chats)]

    trained_rows = []
    features = train._features
    monkeypatch.setattr(causal_lm, "generate", scripted_generate)
    monkeypatch.setattr(train, "_features", lambda *a: trained_rows.append(len(features(*a))) or features(*a))
    prompts = [" ".join(c.user_text.split()[:4]) for c in random_chats(20, seed=7)]
    report = purify(llm_pair.finetuned, llm_pair.pretrained, random_chats(48), tmp_path / "out",
                    quick_config(distill_answers=True, distill_answer_tokens=7, ratio_auto=False), unlabelled_texts=prompts)
    record = report["unlabelled_text"]
    assert record["teacher"] == {"prompts": 20, "answers_kept": 10, "max_new_tokens": 7}
    assert "distillation of the suspect model's answers (10 rows)" in record["used_for"]
    assert record["repaired_model_calibration"] is None
    assert trained_rows == [36 + 10]  # the training part of the clean chats, and the ten complete answers
    assert report["ratio_search"]["candidates"][0]["best_epoch"] is not None  # judged on the held-out chats only

    for name, off in (("default", {}), ("off", dict(distill=False, distill_answers=True))):
        plain = purify(llm_pair.finetuned, llm_pair.pretrained, random_chats(48), tmp_path / name,
                       quick_config(ratio_auto=False, **off), unlabelled_texts=prompts)
        assert plain["unlabelled_text"]["teacher"] is None and trained_rows[-1] == 36
