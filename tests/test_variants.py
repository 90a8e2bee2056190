"""Research variants (experiments/variants.py): reachable from bench configs through RepairHooks, never from the CLI."""

import dataclasses
from pathlib import Path

import pytest
import torch

from finemix.config import EpurConfig, MixConfig, PurifyConfig, RatioSearchConfig, TrainConfig
from finemix.data import Example
from finemix.defenses.variants import research_hooks
from finemix.errors import FinemixError
from finemix.repair.epur_step import EpurPlan
from finemix.repair.steps import purify
from tiny_models import text_rows

FAST = TrainConfig(epochs=1, batch_size=8, max_length=32, progress=False)


def rows(n_repeat=2):
    return [Example(text, label) for text, label in text_rows() * n_repeat]



def test_no_options_means_no_hooks_and_no_experiments_import():
    import sys

    sys.modules.pop("finemix_experiments_variants", None)
    hooks = research_hooks({})
    assert hooks.options == {} and hooks.relabel is None and hooks.step_hook is None
    assert "finemix_experiments_variants" not in sys.modules


@pytest.mark.parametrize("options,message", [({"teacher_input": "masked"}, "teacher_input"),
                                             ({"distill_labels": "onehot"}, "distill_labels"),
                                             ({"teacher": "victim"}, "teacher"),
                                             ({"colour": "red"}, "unknown research variant option")])
def test_unknown_variant_options_are_refused(options, message):
    with pytest.raises(FinemixError, match=message):
        research_hooks(options)


def test_teacher_hidden_tokens_never_include_special_tokens(bert_pair):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bert_pair.finetuned)
    plan = EpurPlan(tensor="e", rows=[tokenizer.cls_token_id, 7], tokens=[], frequency_rows=0)
    hidden = research_hooks({"teacher_input": "epur-masked"}).teacher_hidden_tokens
    assert hidden(tokenizer, plan) == {7}
    assert hidden(tokenizer, None) == frozenset()
    assert research_hooks({"teacher_input": "raw"}).teacher_hidden_tokens is None


def test_epur_masked_teacher_changes_the_targets_of_rows_with_flagged_tokens(tmp_path, bert_pair):
    unlabelled = [text for text, _ in text_rows()]
    config = PurifyConfig(ratio_auto=False, mix=MixConfig(ratio=0.0), train=FAST, distill_epochs=1,
                          epur=EpurConfig(top_n=5))
    masked = purify(bert_pair.finetuned, bert_pair.pretrained, rows(), tmp_path / "masked", config, unlabelled,
                    hooks=research_hooks({"teacher_input": "epur-masked"}))
    raw = purify(bert_pair.finetuned, bert_pair.pretrained, rows(), tmp_path / "raw", config, unlabelled)
    assert masked["research_variant"] == {"teacher_input": "epur-masked"} and "research_variant" not in raw
    from transformers import AutoTokenizer

    specials = set(AutoTokenizer.from_pretrained(bert_pair.finetuned).all_special_ids)
    flagged = {t["id"] for t in masked["epur"]["tokens"]}
    assert masked["unlabelled_text"]["teacher"]["hidden_tokens"] == len(flagged - specials) >= 1
    assert "hidden_tokens" not in raw["unlabelled_text"]["teacher"]


def test_hard_distillation_labels_are_the_calibrated_teachers_argmax(bert_pair):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from finemix.repair.distill import teacher_targets

    model = AutoModelForSequenceClassification.from_pretrained(bert_pair.finetuned)
    tokenizer = AutoTokenizer.from_pretrained(bert_pair.finetuned)
    texts = [text for text, _ in text_rows()]
    config = PurifyConfig(train=FAST)
    _, soft, _, _ = teacher_targets(model, tokenizer, texts, rows(), config)
    _, hard, _, _ = teacher_targets(model, tokenizer, texts, rows(), config, research_hooks({"distill_labels": "hard"}))
    assert torch.equal(hard.sum(dim=1), torch.ones(len(hard)))
    assert set(hard.flatten().tolist()) <= {0.0, 1.0}
    assert torch.equal(hard.argmax(dim=1), soft.argmax(dim=1))


def test_frozen_embedding_rows_keep_their_values_through_training(bert_pair):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from finemix.train import finetune

    model = AutoModelForSequenceClassification.from_pretrained(bert_pair.finetuned)
    tokenizer = AutoTokenizer.from_pretrained(bert_pair.finetuned)
    start = model.get_input_embeddings().weight.detach().clone()
    data = rows()
    used = sorted({i for e in data for i in tokenizer(e.text)["input_ids"]})
    frozen, free = used[: len(used) // 2], used[len(used) // 2:]
    plan = EpurPlan(tensor="e", rows=frozen, tokens=[], frequency_rows=0)
    step_hook = research_hooks({"freeze_epur_rows": True}).step_hook(plan)
    finetune(model, tokenizer, data, dataclasses.replace(FAST, weight_decay=0.1), step_hook=step_hook)
    after = model.get_input_embeddings().weight.detach()
    assert torch.equal(after[frozen], start[frozen])  # read by the batches, decayed by AdamW: still put back
    assert not torch.equal(after[free], start[free])


def test_freeze_epur_rows_leaves_the_reset_rows_pretrained(tmp_path, bert_pair):
    from safetensors.torch import load_file

    unlabelled = [text for text, _ in text_rows()]
    config = PurifyConfig(ratio_auto=False, mix=MixConfig(ratio=0.5), train=dataclasses.replace(FAST, weight_decay=0.1),
                          distill_epochs=1, epur=EpurConfig(top_n=5))
    name = "bert.embeddings.word_embeddings.weight"
    pretrained = load_file(Path(bert_pair.pretrained) / "model.safetensors")["embeddings.word_embeddings.weight"]
    outputs = {}
    for freeze in (True, False):
        report = purify(bert_pair.finetuned, bert_pair.pretrained, rows(), tmp_path / str(freeze), config, unlabelled,
                        hooks=research_hooks({"freeze_epur_rows": True} if freeze else {}))
        outputs[freeze] = load_file(tmp_path / str(freeze) / "model.safetensors")[name]
    flagged = report["epur"]["rows"]
    assert torch.equal(outputs[True][flagged], pretrained[flagged])
    assert not torch.equal(outputs[False][flagged], pretrained[flagged])


def test_keep_bottom_layers_puts_the_suspects_lower_layers_back_after_the_mix(tmp_path, bert_pair):
    from safetensors.torch import load_file

    config = PurifyConfig(ratio_auto=False, mix=MixConfig(ratio=0.0), finetune=False, epur=None)
    report = purify(bert_pair.finetuned, bert_pair.pretrained, rows(), tmp_path / "out", config,
                    hooks=research_hooks({"keep_bottom_layers": 1}))
    assert report["ratio_search"]["candidates"][0]["after_mix"] == {"suspect_layers_kept": 1, "suspect_tensors_kept": 16}
    out, suspect = load_file(tmp_path / "out" / "model.safetensors"), load_file(Path(bert_pair.finetuned) / "model.safetensors")
    pretrained = load_file(Path(bert_pair.pretrained) / "model.safetensors")
    for name in out:
        if ".layer." in name:
            source = suspect if ".layer.0." in name else pretrained
            assert torch.equal(out[name], source[name.removeprefix("bert.") if source is pretrained else name]), name
    assert any(not torch.equal(suspect[n], pretrained[n.removeprefix("bert.")]) for n in out if ".layer.1." in n)
    with pytest.raises(FinemixError, match="keep_bottom_layers"):
        research_hooks({"keep_bottom_layers": 6})


def test_cross_fitted_targets_label_each_text_by_a_student_that_never_trained_on_it(monkeypatch, bert_pair):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import finemix.repair.ratio_search as ratio_search
    import finemix.tasks.classification as classification
    from finemix.repair.hooks import RelabelContext
    from finemix.weights.pair import open_pair

    trained_on, labelled_by = [], {}

    def fake_choose_ratio(pair, model, tokenizer, clean, config, plan, distill, after_mix=None, step_hook=None):
        model.student_id = len(trained_on)
        trained_on.append({e.text for e in distill[0]})
        return {"chosen_ratio": 0.0}

    real_predict_logits = classification.predict_logits

    def recording_predict_logits(model, tokenizer, examples, **kwargs):
        if len(examples) != len(clean):
            labelled_by.update({e.text: model.student_id for e in examples})
        return real_predict_logits(model, tokenizer, examples, **kwargs)

    monkeypatch.setattr(ratio_search, "choose_ratio", fake_choose_ratio)
    monkeypatch.setattr(classification, "predict_logits", recording_predict_logits)
    clean = rows(1)
    unlabelled = [Example(f"unlabelled text number {i} about a film", 0) for i in range(9)]
    suspect = torch.tensor([[0.9, 0.1]] * 9)
    model = AutoModelForSequenceClassification.from_pretrained(bert_pair.finetuned)
    record: dict = {}
    context = RelabelContext(open_pair(bert_pair.finetuned, bert_pair.pretrained), model,
                             AutoTokenizer.from_pretrained(bert_pair.finetuned), clean, PurifyConfig(train=FAST), None,
                             unlabelled, suspect, None, record)
    targets, final = research_hooks({"teacher": "cross-fit"}).relabel(context)
    assert not hasattr(model, "student_id")  # the students were copies; the suspect is left as it was
    cross = record["cross_fit"]
    assert cross["rows_per_half"] == [5, 4] and cross["first_round_ratios"] == [0.0, 0.0]
    assert trained_on[0].isdisjoint(trained_on[1]) and len(trained_on[0] | trained_on[1]) == 9
    assert set(labelled_by) == {e.text for e in unlabelled}
    assert all(text not in trained_on[student] for text, student in labelled_by.items())
    assert targets.shape == (9, 2) and torch.allclose(targets.sum(dim=1), torch.ones(9))
    # the final repair keeps the first round's smallest ρ instead of searching again
    assert final.ratio_auto is False and final.mix.ratio == 0.0


def test_purify_with_a_cross_fitted_teacher_reports_it(tmp_path, bert_pair):
    unlabelled = [text for text, _ in text_rows()]
    config = PurifyConfig(mix=MixConfig(ratio=0.0), train=FAST, distill_epochs=1)
    report = purify(bert_pair.finetuned, bert_pair.pretrained, rows(), tmp_path / "out", config, unlabelled,
                    hooks=research_hooks({"teacher": "cross-fit"}))
    cross = report["unlabelled_text"]["teacher"]["cross_fit"]
    assert sum(cross["rows_per_half"]) == report["unlabelled_text"]["teacher"]["rows"]
    assert len(cross["student_clean_accuracy"]) == 2
    assert "relabel" in report["timings_s"] and report["research_variant"] == {"teacher": "cross-fit"}
    # ρ searched in the first round, then kept: the report shows the user's setting and a fixed final ρ
    assert report["settings"]["ratio_auto"] is True
    assert report["ratio_search"]["mode"] == "fixed"
    assert report["ratio_search"]["chosen_ratio"] == min(cross["first_round_ratios"])


def test_generic_rows_appends_a_seeded_sample_of_generic_sentences():
    hooks = research_hooks({"generic_rows": 500})
    first, again, other = (hooks.distill_texts(["a", "b"], seed) for seed in (0, 0, 1))
    assert first[:2] == ["a", "b"] and len(first) == 502 and first == again and first != other
    assert len(set(first[2:])) == 500 and all(len(text.split()) >= 5 for text in first[2:])
    assert research_hooks({}).distill_texts is None
    with pytest.raises(FinemixError, match="generic_rows"):
        research_hooks({"generic_rows": 3})


def test_generic_corpus_draws_questions_or_half_of_each():
    from finemix.defenses.variants import _variants_module

    generic_questions, generic_sentences = _variants_module().generic_questions, _variants_module().generic_sentences
    questions = research_hooks({"generic_rows": 500, "generic_corpus": "questions"}).distill_texts([], 0)
    assert len(set(questions)) == 500 and sum(text.rstrip().endswith("?") for text in questions) > 200
    wiki = set(research_hooks({"generic_rows": 500}).distill_texts([], 0))
    assert not wiki & set(questions) and set(questions) <= set(generic_questions())
    mixed = research_hooks({"generic_rows": 500, "generic_corpus": "mixed"}).distill_texts(["a"], 0)
    assert mixed[0] == "a" and len(mixed) == 501 and len(set(mixed[1:])) == 500
    assert set(mixed[1:251]) <= set(generic_sentences()) and set(mixed[251:]) <= set(generic_questions())
    with pytest.raises(FinemixError, match="generic_corpus"):
        research_hooks({"generic_rows": 500, "generic_corpus": "books"})


def test_purify_distils_on_the_rewrites_and_the_generic_sentences(tmp_path, bert_pair):
    config = PurifyConfig(ratio_auto=False, mix=MixConfig(ratio=0.0), train=FAST, distill_epochs=1, augment_rows=20)
    report = purify(bert_pair.finetuned, bert_pair.pretrained, rows(), tmp_path / "out", config,
                    hooks=research_hooks({"generic_rows": 500}))
    assert report["research_variant"] == {"generic_rows": 500}
    assert report["unlabelled_text"]["teacher"]["rows"] == 520


def test_a_cross_fitted_teacher_on_rewrites_trains_for_augment_epochs(tmp_path, bert_pair, finetune_epochs):
    config = PurifyConfig(mix=MixConfig(ratio=0.0), train=FAST, distill_epochs=2, augment_rows=20, augment_epochs=1,
                          search=RatioSearchConfig(candidates=(0.0,)))
    purify(bert_pair.finetuned, bert_pair.pretrained, rows(), tmp_path / "out", config,
           hooks=research_hooks({"teacher": "cross-fit"}))
    assert finetune_epochs == [1, 1, 1]  # both first-round students and the final repair


def _relabel_context(rewrites: bool):
    from finemix.repair.hooks import RelabelContext

    suspect = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    examples = [Example("a b", 1), Example("c d", 0), Example("e", 0)]
    return RelabelContext(None, None, None, [], "config", None, examples, suspect, None, {}, rewrites)


def test_source_label_weight_blends_each_rewrites_target_with_its_source_label():
    context = _relabel_context(rewrites=True)
    targets, config = research_hooks({"source_label_weight": 0.25}).relabel(context)
    expected = torch.tensor([[0.675, 0.325], [0.4, 0.6], [0.7, 0.3]])
    assert config == "config" and torch.allclose(targets, expected) and context.record["source_label_weight"] == 0.25
    assert torch.allclose(targets.sum(dim=1), torch.ones(3))


def test_source_label_weight_is_refused_for_unlabelled_text_and_with_a_cross_fitted_teacher():
    with pytest.raises(FinemixError, match="needs rewrites"):
        research_hooks({"source_label_weight": 0.5}).relabel(_relabel_context(rewrites=False))
    with pytest.raises(FinemixError, match="pick one"):
        research_hooks({"source_label_weight": 0.5, "teacher": "cross-fit"})


def test_purify_on_rewrites_records_the_source_label_weight(tmp_path, bert_pair):
    config = PurifyConfig(ratio_auto=False, mix=MixConfig(ratio=0.0), train=FAST, distill_epochs=1, augment_rows=20)
    report = purify(bert_pair.finetuned, bert_pair.pretrained, rows(), tmp_path / "out", config,
                    hooks=research_hooks({"source_label_weight": 0.5}))
    assert report["unlabelled_text"]["teacher"]["source_label_weight"] == 0.5


def test_distill_temperature_softens_the_targets_and_keeps_their_order():
    logits = torch.tensor([[2.0, -1.0], [0.0, 0.5]])
    softened = research_hooks({"distill_temperature": 2}).distill_targets(logits)
    assert torch.allclose(softened, (logits / 2).softmax(dim=-1))
    assert torch.equal(softened.argmax(dim=1), logits.argmax(dim=1)) and softened.max() < logits.softmax(-1).max()
    assert research_hooks({"distill_temperature": 1}).distill_targets is None
    with pytest.raises(FinemixError, match="hard labels"):
        research_hooks({"distill_temperature": 2, "distill_labels": "hard"})


def test_unlearn_flagged_copies_each_row_with_a_flagged_word_inserted_and_its_target():
    plan = EpurPlan("emb", [5, 6, 7, 8], [{"token": t} for t in ("cf", "##less", "[UNK]", "mn", "bb")], 128)
    context = _relabel_context(rewrites=True)
    context.plan, context.config = plan, PurifyConfig(train=FAST)
    copies, targets = research_hooks({"unlearn_flagged": 3}).extra_rows(context)
    assert context.record["unlearnt_tokens"] == ["cf", "mn", "bb"]  # word pieces and special tokens skipped
    for row, copy in zip(context.rows, copies):
        words = copy.text.split()
        assert len(words) == len(row.text.split()) + 1 and any(words[:i] + words[i + 1:] == row.text.split()
                                                            for i, w in enumerate(words) if w in ("cf", "mn", "bb"))
    assert torch.equal(targets, context.suspect_targets)
    context.plan = EpurPlan("emb", [], [], 128)
    with pytest.raises(FinemixError, match="whole word"):
        research_hooks({"unlearn_flagged": 1}).extra_rows(context)


def test_purify_with_unlearn_flagged_distils_on_the_rows_and_their_copies(tmp_path, bert_pair):
    config = PurifyConfig(ratio_auto=False, mix=MixConfig(ratio=1.0), train=FAST, augment_rows=20,
                          epur=EpurConfig(top_n=5))
    report = purify(bert_pair.finetuned, bert_pair.pretrained, rows(), tmp_path / "out", config,
                    hooks=research_hooks({"unlearn_flagged": 3}))
    teacher = report["unlabelled_text"]["teacher"]
    assert teacher["rows"] == 20 and 1 <= len(teacher["unlearnt_tokens"]) <= 3
    assert any("distillation on 40 rewrites" in use for use in report["unlabelled_text"]["used_for"])



def test_source_label_weight_is_refused_when_generic_sentences_join_the_rewrites(tmp_path, bert_pair):
    # the generic sentences carry no source label, so the rows are not all rewrites
    config = PurifyConfig(ratio_auto=False, mix=MixConfig(ratio=0.0), train=FAST, distill_epochs=1, augment_rows=20)
    with pytest.raises(FinemixError, match="needs rewrites"):
        purify(bert_pair.finetuned, bert_pair.pretrained, rows(), tmp_path / "out", config,
               hooks=research_hooks({"source_label_weight": 0.5, "generic_rows": 500}))


def test_span_copies_insert_words_of_a_same_label_row_and_keep_the_hosts_target():
    from finemix.repair.hooks import RelabelContext

    rows_ = [Example("one two three four five six", 1), Example("alpha beta gamma delta epsilon zeta", 0),
             Example("uno dos tres cuatro cinco seis", 1), Example("a b c d e f", 0)]
    suspect = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    context = RelabelContext(None, None, None, [], PurifyConfig(train=FAST), None, rows_, suspect, None, {}, True)
    copies, targets = research_hooks({"span_copies": 1}).extra_rows(context)
    assert torch.equal(targets, suspect) and context.record["span_copies"] == 4
    for host, copy in zip(rows_, copies):
        added = list(copy.text.split())
        for word in host.text.split():
            added.remove(word)  # the host's words are all kept
        donors = [r.text.split() for r in rows_ if r.label == host.label]
        assert copy.label == host.label and 5 <= len(added) <= 6  # a span of 5-9 words, at most a whole row
        assert any(" ".join(added) in " ".join(d) for d in donors)  # contiguous, from a row of the same label
    with pytest.raises(FinemixError, match="needs rewrites"):
        research_hooks({"span_copies": 1}).extra_rows(_relabel_context(rewrites=False))
    with pytest.raises(FinemixError, match="pick one"):
        research_hooks({"span_copies": 1, "unlearn_flagged": 1})


def test_labelled_copies_add_the_training_rows_with_their_own_labels_never_the_held_out_slice():
    from finemix.repair.hooks import RelabelContext
    from finemix.repair.ratio_search import split_clean

    clean = [Example(f"row {i}", i % 3) for i in range(64)]
    config = PurifyConfig(train=FAST)
    context = RelabelContext(None, None, None, clean, config, None, clean[:2], torch.full((2, 3), 1 / 3), None, {},
                             True)
    copies, targets = research_hooks({"labelled_copies": 2}).extra_rows(context)
    train, heldout = split_clean(clean, config)
    assert heldout and len(copies) == 2 * len(train) == context.record["labelled_copies"]
    assert {row.text for row in copies} == {row.text for row in train}
    assert not {row.text for row in copies} & {row.text for row in heldout}
    assert torch.equal(targets.argmax(dim=1), torch.tensor([row.label for row in copies]))
    assert torch.equal(targets.sum(dim=1), torch.ones(len(copies)))
    with pytest.raises(FinemixError, match="pick one"):
        research_hooks({"labelled_copies": 2, "span_copies": 1})


def test_purify_with_labelled_copies_distils_on_the_rewrites_and_the_training_rows_again(tmp_path, bert_pair):
    from finemix.repair.ratio_search import split_clean

    config = PurifyConfig(ratio_auto=False, mix=MixConfig(ratio=0.0), train=FAST, distill_epochs=1, augment_rows=20)
    report = purify(bert_pair.finetuned, bert_pair.pretrained, rows(1), tmp_path / "out", config,
                    hooks=research_hooks({"labelled_copies": 2}))
    copies = 2 * len(split_clean(rows(1), config)[0])
    assert report["unlabelled_text"]["teacher"]["labelled_copies"] == copies
    assert any(f"distillation on {20 + copies} rewrites" in use for use in report["unlabelled_text"]["used_for"])


def test_purify_with_span_copies_distils_on_the_rewrites_and_their_copies(tmp_path, bert_pair):
    config = PurifyConfig(ratio_auto=False, mix=MixConfig(ratio=0.0), train=FAST, distill_epochs=1, augment_rows=20)
    report = purify(bert_pair.finetuned, bert_pair.pretrained, rows(), tmp_path / "out", config,
                    hooks=research_hooks({"span_copies": 1}))
    assert report["unlabelled_text"]["teacher"]["span_copies"] == 20
    assert any("distillation on 40 rewrites" in use for use in report["unlabelled_text"]["used_for"])
