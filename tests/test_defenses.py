"""Defenses: the registry, the defender's boundary, fine-pruning, and each defense end to end."""

import ast
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from finemix import defenses
from finemix.config import TrainConfig
from finemix.data import Example
from finemix.defenses import (
    DEFENSES,
    DefenderInputs,
    DefenseSettings,
    mean_activations,
    prune_dormant_neurons,
    run_defense,
)
from finemix.errors import FinemixError
from finemix.tasks.classification import load_classifier
from tiny_models import load_state, quiet_transformers, text_rows

CLEAN = tuple(Example(text, label) for text, label in text_rows())
SETTINGS = DefenseSettings(train=TrainConfig(epochs=1, batch_size=8, max_length=16, progress=False), distill=False)


def test_registry_has_every_defense_with_and_without_epur():
    bases = ["finetune", "fineprune", "mix", "finemix", "finemix-sel"]
    assert set(DEFENSES) == {"none", "epur"} | set(bases) | {f"{b}+epur" for b in bases}
    with pytest.raises(FinemixError, match="unknown defense"):
        run_defense("onion", DefenderInputs(Path("."), "x", CLEAN), Path("out"), SETTINGS)


def test_defender_types_have_no_room_for_attack_knowledge():
    forbidden = ("trigger", "target", "poison", "card", "attack")
    for cls in (DefenderInputs, DefenseSettings):
        for field in dataclasses.fields(cls):
            assert not any(word in field.name for word in forbidden), (cls.__name__, field.name)


@pytest.mark.parametrize("module", sorted(p.name for p in Path(defenses.__file__).parent.glob("*.py")))
def test_defense_modules_import_nothing_from_the_attack_side(module):
    tree = ast.parse((Path(defenses.__file__).parent / module).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
            imported.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    assert not any("attacks" in name or name.endswith(("with_trigger", "insert_trigger", "evaluate")) for name in imported)


def test_fine_pruning_zeroes_the_least_active_neurons_and_keeps_them_zero(bert_pair):
    with quiet_transformers():
        model = load_classifier(bert_pair.finetuned)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bert_pair.finetuned)
    means = mean_activations(model, tokenizer, list(CLEAN), 16)
    record = prune_dormant_neurons(model, tokenizer, list(CLEAN), 0.25, 16)
    layers = model.bert.encoder.layer
    width = layers[0].intermediate.dense.out_features
    assert record["pruned_neurons"] == len(layers) * int(0.25 * width)
    pruned_by_layer = []
    for layer, mean in zip(layers, means):
        up, down = layer.intermediate.dense, layer.output.dense
        pruned = (up.weight == 0).all(dim=1).nonzero().flatten()
        assert set(pruned.tolist()) == set(torch.argsort(mean)[: int(0.25 * width)].tolist())
        assert (up.bias[pruned] == 0).all() and (down.weight[:, pruned] == 0).all()
        pruned_by_layer.append(pruned)
    from finemix.train import finetune

    finetune(model, tokenizer, list(CLEAN), TrainConfig(epochs=1, batch_size=8, max_length=16, lr=1e-2, progress=False))
    for layer, pruned in zip(layers, pruned_by_layer):
        assert (layer.intermediate.dense.weight[pruned] == 0).all()
        assert (layer.output.dense.weight[:, pruned] == 0).all()
    assert (layers[0].intermediate.dense.weight != 0).any()


def test_fine_pruning_refuses_models_without_ffn_blocks():
    with pytest.raises(FinemixError, match="BERT-style"):
        defenses.ffn_activation_modules(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_none_returns_the_suspect_itself(bert_pair, tmp_path):
    result = run_defense("none", DefenderInputs(bert_pair.finetuned, str(bert_pair.pretrained), CLEAN), tmp_path / "x", SETTINGS)
    assert result.model == bert_pair.finetuned and not (tmp_path / "x").exists()


@pytest.mark.parametrize("name", ["finetune", "fineprune+epur", "finemix", "finemix-sel+epur", "mix", "epur"])
def test_each_defense_writes_a_loadable_model_and_report(name, bert_pair, tmp_path):
    inputs = DefenderInputs(bert_pair.finetuned, str(bert_pair.pretrained), CLEAN, ("the movie was fun",) * 5)
    with quiet_transformers():
        result = run_defense(name, inputs, tmp_path / name, dataclasses.replace(SETTINGS, ratio=0.5))
        load_classifier(result.model)
    report = json.loads((result.model / "finemix_report.json").read_text())
    assert (report["epur"] is not None) == name.endswith("epur")
    search = report["ratio_search"]
    expected_ratio = 1.0 if name.split("+")[0] in ("finetune", "fineprune", "epur") else 0.5
    assert search["chosen_ratio"] == expected_ratio
    # Did it train: the head has no pre-trained counterpart, so mixing, E-PUR and pruning leave it
    # the suspect's (head policy "keep"); only fine-tuning moves it.
    suspect, defended = load_state(bert_pair.finetuned), load_state(result.model)
    trained = not all(torch.equal(defended[k], suspect[k]) for k in ("classifier.weight", "classifier.bias"))
    assert trained == (name.split("+")[0] not in ("mix", "epur"))
    assert ("after_mix" in search["candidates"][0]) == name.startswith("fineprune")


def test_mixing_without_fine_tuning_is_exactly_the_mix(bert_pair, tmp_path):
    from finemix.config import MixConfig
    from finemix.repair.steps import mix_checkpoint

    inputs = DefenderInputs(bert_pair.finetuned, str(bert_pair.pretrained), CLEAN)
    with quiet_transformers():
        result = run_defense("mix", inputs, tmp_path / "defended", dataclasses.replace(SETTINGS, ratio=0.4))
    mix_checkpoint(bert_pair.finetuned, bert_pair.pretrained, tmp_path / "mixed", MixConfig(ratio=0.4, seed=0))
    defended, mixed = load_state(result.model), load_state(tmp_path / "mixed")
    assert defended.keys() == mixed.keys()
    assert all(torch.equal(defended[k], mixed[k]) for k in mixed)


def test_the_head_policy_reaches_the_mix(bert_pair, tmp_path):
    inputs = DefenderInputs(bert_pair.finetuned, str(bert_pair.pretrained), CLEAN)
    suspect = load_state(bert_pair.finetuned)
    with quiet_transformers():
        kept = load_state(run_defense("mix", inputs, tmp_path / "keep", dataclasses.replace(SETTINGS, ratio=1.0)).model)
        fresh = load_state(run_defense("mix", inputs, tmp_path / "reinit", dataclasses.replace(SETTINGS, ratio=1.0, head="reinit")).model)
    head = [k for k in suspect if k.startswith("classifier.") and k.endswith("weight")]
    assert head and all(torch.equal(kept[k], suspect[k]) for k in head)
    assert not any(torch.equal(fresh[k], suspect[k]) for k in head)
    encoder = [k for k in suspect if k.startswith("bert.encoder.")]
    assert all(torch.equal(fresh[k], suspect[k]) for k in encoder)
    with pytest.raises(FinemixError, match="head policy"):
        DefenseSettings(head="zero")
