"""Hostile model folders (issue 15, defects 4, 5, 7 and 13's remote code), through the CLI.

* a weight missing from the suspect checkpoint is refused, named (transformers would make it random);
* ``--pretrained`` holding the suspect's own weights (same folder, same files, a copy) is refused;
* nothing from outside a model folder gets in: links out and shard paths out are refused,
  Hub cache snapshots (links into the cache's blobs) still work, every shard read is hashed;
* the output never carries the suspect's code: ``*.py`` left behind, ``auto_map`` removed, reported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_models import ARCHS, load_state

from cli_helpers import run

FAST = ["--epochs", "1", "--batch-size", "8", "--max-length", "32", "--quiet"]
SECRET = "TOP-SECRET-not-part-of-any-model"


def refused(capsys, *argv) -> str:
    """Run a command that must fail with one ``finemix: error:`` line; return that line."""
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    assert err.startswith("finemix: error:") and err.count("\n") == 1, err
    return err


def copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target


def save_state(folder: Path, state: dict) -> None:
    from safetensors.torch import save_file

    for pattern in ("*.safetensors", "*.index.json", "*.bin"):
        for old in folder.glob(pattern):
            old.unlink()
    tensors = {k: v.contiguous() for k, v in state.items()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def reshard(folder: Path, subfolder: str = "", shards: int = 2) -> list[str]:
    """Split the folder's single safetensors file into ``shards`` files plus an index; return their names."""
    from safetensors.torch import save_file

    state = load_state(folder)
    (folder / "model.safetensors").unlink()
    names = sorted(state)
    files, weight_map = [], {}
    for i in range(shards):
        file = f"{subfolder}model-{i + 1:05d}-of-{shards:05d}.safetensors"
        (folder / file).parent.mkdir(parents=True, exist_ok=True)
        part = {n: state[n].contiguous() for n in names[i::shards]}
        save_file(part, str(folder / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in part})
        files.append(file)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return files


def write_index(folder: Path, rename: dict[str, str]) -> None:
    index = folder / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"] = {k: rename.get(v, v) for k, v in data["weight_map"].items()}
    index.write_text(json.dumps(data))


# ---------------------------------------------------------------- defect 4: a weight missing from θ_B


def _missing(keys: list[str], kind: str) -> list[str]:
    """The tensor names one kind of damage removes from a fine-tuned tiny classifier."""
    head_out = [k for k in keys if k.startswith("classifier.") and k.endswith("weight")][-1]  # the output layer
    if kind == "head weight":
        return [head_out]
    if kind == "whole head":
        return [k for k in keys if k.startswith(("classifier.", "pre_classifier."))]
    layer = [k for k in keys if ".layer.1." in k]
    if kind == "encoder weight":
        return [next(k for k in layer if k.endswith("weight") and ("query" in k or "q_lin" in k))]
    return layer  # "whole layer"


def _damaged(tmp_path: Path, pair, kind: str) -> tuple[Path, list[str]]:
    folder = copy_model(pair.finetuned, tmp_path / "damaged")
    state = load_state(folder)
    removed = _missing(sorted(state), kind)
    save_state(folder, {k: v for k, v in state.items() if k not in removed})
    return folder, removed


@pytest.mark.parametrize("kind", ["head weight", "whole head", "encoder weight", "whole layer"])
@pytest.mark.parametrize("tiny_pair", ARCHS, indirect=True)
def test_mix_refuses_a_suspect_without_a_weight_of_its_model(tmp_path, capsys, tiny_pair, kind):
    damaged, removed = _damaged(tmp_path, tiny_pair, kind)
    out = tmp_path / "out"
    err = refused(capsys, "mix", "--backdoored", damaged, "--pretrained", tiny_pair.pretrained, "--output", out,
                  "--ratio", "0.5")
    assert any(name in err for name in removed) or (kind == "whole head" and "no classification head" in err), err
    assert not out.exists()


@pytest.mark.parametrize("kind", ["head weight", "whole head", "encoder weight", "whole layer"])
@pytest.mark.parametrize("tiny_pair", ["bert", "distilbert"], indirect=True)
def test_purify_epur_and_evaluate_refuse_a_missing_weight_by_name(tmp_path, capsys, tiny_pair, tiny_text_csv, kind):
    damaged, removed = _damaged(tmp_path, tiny_pair, kind)
    for command, extra in (("purify", ["--clean-data", tiny_text_csv, "--ratio", "0.3", *FAST]),
                           ("epur", ["--clean-data", tiny_text_csv])):
        out = tmp_path / command
        err = refused(capsys, command, "--backdoored", damaged, "--pretrained", tiny_pair.pretrained,
                      "--output", out, *extra)
        assert any(name in err for name in removed) or "no classification head" in err, err
        assert not out.exists()
    err = refused(capsys, "evaluate", "--model", damaged, "--data", tiny_text_csv)
    assert any(name in err for name in removed), err


def test_load_check_counts_tied_twins_and_ignores_integer_buffers():
    """The load-time comparison itself: a weight transformers would not report (listed in
    ``_keys_to_ignore_on_load_missing``) is missing unless its tied twin is stored."""
    from finemix.tasks.loading import missing_weights

    class Tiny(torch.nn.Module):
        base_model_prefix = "base"
        _keys_to_ignore_on_load_missing = (r"head\.weight", r"extra\.weight", r"steps")

        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(5, 3)
            self.head = torch.nn.Linear(3, 5, bias=False)
            self.head.weight = self.emb.weight  # tied
            self.extra = torch.nn.Linear(3, 3, bias=False)
            self.register_buffer("steps", torch.zeros((), dtype=torch.long))
            self.register_buffer("scratch", torch.zeros(3), persistent=False)

    model = Tiny()
    assert missing_weights(model, ["emb.weight", "extra.weight"], []) == []
    assert missing_weights(model, ["emb.weight"], []) == ["extra.weight"]
    assert missing_weights(model, ["base.emb.weight", "base.extra.weight"], []) == []  # prefix either way
    assert missing_weights(model, ["extra.weight"], ["emb.weight"]) == ["emb.weight", "head.weight"]


@pytest.mark.parametrize("variant", ["sharded", "bin", "mlm head and old buffers"])
def test_complete_checkpoints_of_other_layouts_still_mix(tmp_path, capsys, tiny_pair_factory, variant):
    """Controls: the completeness check reads pre-training heads, poolers and buffers as such."""
    pair = tiny_pair_factory("bert", sharded=variant == "sharded", bin_format=variant == "bin")
    pretrained = pair.pretrained
    if variant == "mlm head and old buffers":
        pretrained = copy_model(pair.pretrained, tmp_path / "pre-mlm")
        state = {"bert." + k: v for k, v in load_state(pretrained).items()}
        hidden, vocab = state["bert.embeddings.word_embeddings.weight"].shape[::-1]
        state.update({"cls.predictions.bias": torch.zeros(vocab),
                      "cls.predictions.transform.dense.weight": torch.randn(hidden, hidden),
                      "cls.predictions.transform.dense.bias": torch.zeros(hidden),
                      "bert.embeddings.position_ids": torch.arange(64)[None]})
        save_state(pretrained, state)
    code, _, err = run(capsys, "mix", "--backdoored", pair.finetuned, "--pretrained", pretrained,
                       "--output", tmp_path / "out", "--ratio", "0.5")
    assert code == 0, err


# ---------------------------------------------------------------- defect 5: --pretrained is the suspect


def _same_weights(tmp_path: Path, ft: Path, how: str) -> Path:
    if how == "same path":
        return ft
    if how == "same path, spelt differently":
        return ft / "."
    if how == "linked folder":
        (tmp_path / "link").symlink_to(ft, target_is_directory=True)
        return tmp_path / "link"
    copy = copy_model(ft, tmp_path / "copy")
    if how == "hard-linked weights":
        (copy / "model.safetensors").unlink()
        os.link(ft / "model.safetensors", copy / "model.safetensors")
    elif how == "copy as .bin":
        state = load_state(copy)
        (copy / "model.safetensors").unlink()
        torch.save(state, copy / "pytorch_model.bin")
    elif how == "copy without the head":
        state = load_state(copy)
        save_state(copy, {k.split(".", 1)[1]: v for k, v in state.items() if not k.startswith("classifier.")})
    return copy


@pytest.mark.parametrize("how", ["same path", "same path, spelt differently", "linked folder", "copy",
                                 "hard-linked weights", "copy as .bin", "copy without the head"])
def test_mix_refuses_the_suspect_as_its_own_pretrained_model(tmp_path, capsys, bert_pair, how):
    pretrained = _same_weights(tmp_path, bert_pair.finetuned, how)
    out = tmp_path / "out"
    err = refused(capsys, "mix", "--backdoored", bert_pair.finetuned, "--pretrained", pretrained, "--output", out,
                  "--ratio", "0")
    assert "--pretrained must be the model before fine-tuning" in err
    assert not out.exists()


def test_purify_and_epur_refuse_a_copy_of_the_suspect_before_any_work(tmp_path, capsys, bert_pair, tiny_text_csv):
    copy = copy_model(bert_pair.finetuned, tmp_path / "copy")
    for command, extra in (("purify", ["--ratio", "0", *FAST]), ("epur", [])):
        out = tmp_path / command
        err = refused(capsys, command, "--backdoored", bert_pair.finetuned, "--pretrained", copy, "--output", out,
                      "--clean-data", tiny_text_csv, *extra)
        assert "same weights" in err and not out.exists()


# ---------------------------------------------------------------- defect 7: files from outside the folder


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "elsewhere" / "secret.txt"
    path.parent.mkdir()
    path.write_text(SECRET)
    return path


def _nothing_holds_the_secret(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and "elsewhere" not in path.parts:
            assert SECRET not in path.read_text(errors="ignore"), path


@pytest.mark.parametrize("name", ["README.md", "notes.txt", "special_tokens_map.json"])
def test_a_link_out_of_the_suspect_folder_is_never_copied(tmp_path, capsys, bert_pair, secret, name):
    suspect = copy_model(bert_pair.finetuned, tmp_path / "suspect")
    (suspect / name).unlink(missing_ok=True)
    (suspect / name).symlink_to(secret)
    out = tmp_path / "out"
    err = refused(capsys, "mix", "--backdoored", suspect, "--pretrained", bert_pair.pretrained, "--output", out,
                  "--ratio", "0.5")
    assert name in err and "outside the model folder" in err
    _nothing_holds_the_secret(tmp_path)


def test_copy_side_files_skips_links_out_and_says_so(tmp_path, bert_pair, secret):
    from finemix.weights.writer import copy_side_files

    suspect = copy_model(bert_pair.finetuned, tmp_path / "suspect")
    (suspect / "README.md").symlink_to(secret)
    (suspect / "alias.json").symlink_to("config.json")  # a link inside the folder is an ordinary file
    target = tmp_path / "target"
    target.mkdir()
    record = copy_side_files(suspect, target)
    assert record["skipped_links"] == ["README.md"] and "alias.json" in record["copied"]
    assert not (target / "README.md").exists() and not (target / "alias.json").is_symlink()


@pytest.mark.parametrize("side", ["backdoored", "pretrained"])
def test_a_weight_file_linked_from_outside_is_refused(tmp_path, capsys, bert_pair, side):
    folders = {"backdoored": bert_pair.finetuned, "pretrained": bert_pair.pretrained}
    folder = copy_model(folders[side], tmp_path / side)
    moved = tmp_path / "elsewhere" / "model.safetensors"
    moved.parent.mkdir()
    shutil.move(folder / "model.safetensors", moved)
    (folder / "model.safetensors").symlink_to(moved)
    folders[side] = folder
    err = refused(capsys, "mix", "--backdoored", folders["backdoored"], "--pretrained", folders["pretrained"],
                  "--output", tmp_path / "out", "--ratio", "0.5")
    assert "model.safetensors" in err and "outside the model folder" in err


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_a_shard_index_naming_a_file_outside_is_refused(tmp_path, capsys, bert_pair, tiny_text_csv, where):
    suspect = copy_model(bert_pair.finetuned, tmp_path / "suspect")
    shards = reshard(suspect)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.move(suspect / shards[1], outside / shards[1])
    named = f"../outside/{shards[1]}" if where == "relative" else str(outside / shards[1])
    write_index(suspect, {shards[1]: named})
    err = refused(capsys, "mix", "--backdoored", suspect, "--pretrained", bert_pair.pretrained,
                  "--output", tmp_path / "out", "--ratio", "0.5")
    assert "outside the model folder" in err and shards[1] in err
    err = refused(capsys, "evaluate", "--model", suspect, "--data", tiny_text_csv)
    assert "outside the model folder" in err


def test_every_shard_read_is_hashed_in_the_report(tmp_path, capsys, bert_pair):
    from finemix.weights.hashing import file_sha256

    suspect = copy_model(bert_pair.finetuned, tmp_path / "suspect")
    shards = reshard(suspect, subfolder="shards/")
    out = tmp_path / "out"
    code, _, err = run(capsys, "mix", "--backdoored", suspect, "--pretrained", bert_pair.pretrained, "--output", out,
                       "--ratio", "0.5")
    assert code == 0, err
    hashes = json.loads((out / "finemix_report.json").read_text())["inputs"]["backdoored"]["sha256"]
    for shard in shards:
        assert hashes[shard] == file_sha256(suspect / shard)


def _hub_snapshot(cache: Path, model: Path, shared_store: bool = False) -> Path:
    """``model``'s files laid out as huggingface_hub caches them: snapshots/<rev>/<file> → ../../blobs/<etag>,
    and with ``shared_store`` each blob a link again into the cache-wide ``blobs/<2 hex>/<64 hex>``."""
    import hashlib

    repo = cache / "models--someone--tiny"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    if shared_store:
        (cache / "blobs").mkdir()
        (cache / "blobs" / ".huggingface-shared-blobs").write_text("1")
    for file in sorted(model.iterdir()):
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        blob = repo / "blobs" / digest
        if shared_store:
            stored = cache / "blobs" / digest[:2] / digest
            stored.parent.mkdir(exist_ok=True)
            shutil.copyfile(file, stored)
            blob.symlink_to(Path("..", "..", "blobs", digest[:2], digest))
        else:
            shutil.copyfile(file, blob)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", digest))
    return snapshot


@pytest.mark.parametrize("shared_store", [False, True])
def test_hub_cache_snapshots_still_work(tmp_path, capsys, bert_pair, shared_store):
    snapshot = _hub_snapshot(tmp_path / "hub", bert_pair.finetuned, shared_store)
    pre_snapshot = _hub_snapshot(tmp_path / "hub2", bert_pair.pretrained, shared_store)
    out = tmp_path / "out"
    code, _, err = run(capsys, "mix", "--backdoored", snapshot, "--pretrained", pre_snapshot, "--output", out,
                       "--ratio", "0.5")
    assert code == 0, err
    assert (out / "config.json").is_file() and not (out / "config.json").is_symlink()
    written, given = (json.loads((folder / "config.json").read_text()) for folder in (out, bert_pair.finetuned))
    assert written == given
    from finemix.weights.hashing import file_sha256

    inputs = json.loads((out / "finemix_report.json").read_text())["inputs"]["backdoored"]
    assert inputs["sha256"] == {f.name: file_sha256(f) for f in sorted(bert_pair.finetuned.iterdir())
                                if f.suffix in (".safetensors", ".json")}
    assert inputs["sha256_from_hub_blob_names"] == sorted(inputs["sha256"])  # the fixture names every blob by SHA-256


def test_hub_blob_names_give_the_hubs_sha256_and_small_files_are_read(tmp_path):
    """A large file's digest is its blob's name (the Hub's, not re-read); a small file's blob is named by a
    git SHA-1 and is read; a folder outside a Hub cache is read whatever its links."""
    from finemix.weights.hashing import file_sha256, folder_sha256

    repo = tmp_path / "models--someone--tiny"
    snapshot, blobs = repo / "snapshots" / ("0" * 40), repo / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    hub_digest, git_sha1 = "ab" * 32, "cd" * 20
    (blobs / hub_digest).write_bytes(b"weights as downloaded")
    (blobs / git_sha1).write_text("{}")
    (snapshot / "model.safetensors").symlink_to(Path("..", "..", "blobs", hub_digest))
    (snapshot / "config.json").symlink_to(Path("..", "..", "blobs", git_sha1))
    named: list[str] = []
    assert folder_sha256(snapshot, named) == {"config.json": file_sha256(blobs / git_sha1),
                                              "model.safetensors": hub_digest}
    assert named == ["model.safetensors"]
    elsewhere = tmp_path / "plain"
    (elsewhere / "blobs").mkdir(parents=True)
    shutil.copyfile(blobs / hub_digest, elsewhere / "blobs" / hub_digest)
    (elsewhere / "model.safetensors").symlink_to(Path("blobs", hub_digest))
    assert folder_sha256(elsewhere) == {"model.safetensors": file_sha256(blobs / hub_digest)}


def test_a_fake_hub_snapshot_linking_out_is_refused(tmp_path, capsys, bert_pair, secret):
    snapshot = _hub_snapshot(tmp_path / "hub", bert_pair.finetuned)
    (snapshot / "README.md").symlink_to(secret)  # not into the cache's blobs
    err = refused(capsys, "mix", "--backdoored", snapshot, "--pretrained", bert_pair.pretrained,
                  "--output", tmp_path / "out", "--ratio", "0.5")
    assert "README.md" in err and "outside the model folder" in err
    blob = next((snapshot.parent.parent / "blobs").iterdir())  # a blob that is itself a link out
    (snapshot / "README.md").unlink()
    blob.unlink()
    blob.symlink_to(secret)
    err = refused(capsys, "mix", "--backdoored", snapshot, "--pretrained", bert_pair.pretrained,
                  "--output", tmp_path / "out", "--ratio", "0.5")
    assert "outside the model folder" in err
    _nothing_holds_the_secret(tmp_path)


# ---------------------------------------------------------------- defect 13: the suspect's remote code

EVIL = """import pathlib, os
pathlib.Path(os.environ["FINEMIX_TEST_MARKER"]).write_text("the suspect's code ran")
"""


def _with_remote_code(tmp_path: Path, pair) -> Path:
    suspect = copy_model(pair.finetuned, tmp_path / "suspect")
    for name in ("modeling_evil.py", "tokenization_evil.py", "configuration_evil.py"):
        (suspect / name).write_text(EVIL)
    for name, auto_map in (("config.json", {"AutoModelForSequenceClassification": "modeling_evil.EvilModel",
                                            "AutoConfig": "configuration_evil.EvilConfig"}),
                           ("tokenizer_config.json", {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]})):
        data = json.loads((suspect / name).read_text())
        data["auto_map"] = auto_map
        text = json.dumps(data, indent=2)
        if name == "tokenizer_config.json":  # the same key spelt with an escape
            text = text.replace('"auto_map"', '"auto\\u005fmap"')
        (suspect / name).write_text(text)
    return suspect


def test_the_output_carries_no_code_of_the_suspect(tmp_path, capsys, bert_pair):
    suspect = _with_remote_code(tmp_path, bert_pair)
    out = tmp_path / "out"
    code, _, err = run(capsys, "mix", "--backdoored", suspect, "--pretrained", bert_pair.pretrained, "--output", out,
                       "--ratio", "0.5")
    assert code == 0, err
    assert not list(out.glob("*.py"))
    for name in ("config.json", "tokenizer_config.json"):
        written, given = json.loads((out / name).read_text()), json.loads((suspect / name).read_text())
        assert "auto_map" not in written and written == {k: v for k, v in given.items() if k != "auto_map"}
    side = json.loads((out / "finemix_report.json").read_text())["side_files"]
    assert sorted(side["dropped_code_files"]) == ["configuration_evil.py", "modeling_evil.py", "tokenization_evil.py"]
    assert side["removed_keys"] == {"config.json": ["auto_map"], "tokenizer_config.json": ["auto_map"]}
    assert "modeling_evil.py" in (out / "README.md").read_text()
    # whoever loads the output trusting remote code runs nothing of the suspect's
    marker = tmp_path / "marker"
    script = ("from transformers import AutoModelForSequenceClassification as M, AutoTokenizer as T\n"
              f"for load in (M, T):\n    try:\n        load.from_pretrained({str(out)!r}, trust_remote_code=True)\n"
              "    except Exception:\n        pass\n")
    env = {**os.environ, "FINEMIX_TEST_MARKER": str(marker), "HF_MODULES_CACHE": str(tmp_path / "modules"),
           "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=300, capture_output=True)
    assert not marker.exists()


def test_an_ordinary_suspect_loses_nothing(tmp_path, capsys, bert_pair):
    out = tmp_path / "out"
    code, _, err = run(capsys, "mix", "--backdoored", bert_pair.finetuned, "--pretrained", bert_pair.pretrained,
                       "--output", out, "--ratio", "0.5")
    assert code == 0, err
    side = json.loads((out / "finemix_report.json").read_text())["side_files"]
    assert side["dropped_code_files"] == side["skipped_links"] == [] and side["removed_keys"] == {}
    assert {"config.json", "tokenizer_config.json"} <= set(side["copied"])
    for name in side["copied"]:  # copied byte for byte
        assert (out / name).read_bytes() == (bert_pair.finetuned / name).read_bytes()
    assert "Left out" not in (out / "README.md").read_text()


def test_purify_and_epur_leave_the_suspects_code_behind_too(tmp_path, capsys, bert_pair, tiny_text_csv):
    suspect = _with_remote_code(tmp_path, bert_pair)
    for command, extra in (("purify", ["--ratio", "0.3", "--no-epur", *FAST]), ("epur", [])):
        out = tmp_path / command
        code, _, err = run(capsys, command, "--backdoored", suspect, "--pretrained", bert_pair.pretrained,
                           "--output", out, "--clean-data", tiny_text_csv, *extra)
        assert code == 0, err
        assert not list(out.glob("*.py")) and "auto_map" not in json.loads((out / "config.json").read_text())
        side = json.loads((out / "finemix_report.json").read_text())["side_files"]
        assert len(side["dropped_code_files"]) == 3 and "config.json" in side["removed_keys"]


def test_a_home_folder_of_an_unknown_user_is_a_one_line_error(tmp_path, capsys):
    from finemix.cli import main

    code = main(["mix", "--backdoored", "~no-such-user-finemix/x", "--pretrained", "~no-such-user-finemix/y",
                 "--output", str(tmp_path / "out"), "--ratio", "0.3"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("finemix: error:") and err.count("\n") == 1, err
