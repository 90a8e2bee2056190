"""The ``README.md`` model card written beside the weights, built with ``huggingface_hub``'s card tools.

Metadata (YAML, via ``ModelCardData``): the pre-trained model as ``base_model``, tags, the
library versions. Then, in words, what finemix did (from the report) and where the report is.
"""

from __future__ import annotations

from pathlib import Path

CARD_FILE = "README.md"
TAGS = ["finemix", "backdoor-defense"]

_COMMAND_WORDS = {
    "purify": "repaired with Fine-mixing (and E-PUR) by `finemix purify`",
    "mix": "mixed with its pre-trained weights by `finemix mix` (no fine-tuning)",
    "epur": "embedding-purified by `finemix epur` (E-PUR only)",
}


def write_model_card(folder: Path, report: dict) -> None:
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(
        base_model=_base_model(report),
        tags=list(TAGS),
        library_name="transformers",
        finemix={"command": report.get("command"), "versions": report.get("versions", {}), "report": "finemix_report.json"},
    )
    content = f"---\n{data.to_yaml()}\n---\n\n" + card_text(report)
    ModelCard(content).save(str(Path(folder) / CARD_FILE))


def _base_model(report: dict) -> str:
    """The pre-trained model as the user named it: a Hub name stays a Hub name."""
    pretrained = report.get("inputs", {}).get("pretrained", {})
    return str(pretrained.get("name") or pretrained.get("path") or "unknown")


def card_text(report: dict) -> str:
    lines = ["# A model processed by finemix", "",
             f"This model was {_COMMAND_WORDS.get(report.get('command'), 'written by finemix')} from a suspect "
             f"fine-tuned model (`{report.get('inputs', {}).get('backdoored', {}).get('path', '?')}`).", ""]
    lines += _epur_lines(report.get("epur"))
    lines += _mixing_lines(report.get("mixing"), report.get("ratio_search"))
    lines += _training_lines(report)
    lines += _side_file_lines(report.get("side_files"))
    verdict = report.get("verdict")
    if verdict:
        lines += ["## Verdict", "", str(verdict.get("summary", verdict)), ""]
    lines += ["## Report", "", "Every setting, input hash, candidate and timing is in `finemix_report.json` beside the "
              "weights. finemix removes what it can of a backdoor from clean data alone; it cannot prove none is left.", ""]
    return "\n".join(lines)


def _epur_lines(epur: dict | None) -> list[str]:
    if not epur:
        return ["- E-PUR: not run.", ""]
    shown = ", ".join(f"`{t['token']}`" for t in epur.get("tokens", [])[:10])
    return [f"- E-PUR reset {len(epur.get('rows', []))} word-embedding rows to their pre-trained values "
            f"(highest scores: {shown}).", ""]


def _mixing_lines(mixing: dict | None, search: dict | None) -> list[str]:
    lines = []
    if search:
        lines.append(f"- ρ = {search.get('chosen_ratio')} ({search.get('mode')}): {search.get('reason')}.")
    if mixing:
        heads = (f"; head tensors ({mixing['head_policy']}): {', '.join(mixing.get('head_tensors', [])) or 'none'}"
                 if "head_policy" in mixing else "")
        of = f" ({mixing['granularity']}s of a LoRA adapter's update)" if "granularity" in mixing else ""
        lines.append(f"- Mixing kept {mixing.get('kept_fraction')} of the fine-tuned weights{of} of "
                     f"{mixing.get('mixed_tensors')} tensors{heads}.")
    return lines + [""] if lines else []


def _side_file_lines(side_files: dict | None) -> list[str]:
    """What of the suspect's own files was left out: its code, remote-code keys, links out of its folder."""
    if not side_files:
        return []
    left_out = [f"`{name}` (code)" for name in side_files.get("dropped_code_files", [])]
    left_out += [f"`{key}` in `{name}`" for name, keys in side_files.get("removed_keys", {}).items() for key in keys]
    left_out += [f"`{name}` (a link out of the suspect's folder)" for name in side_files.get("skipped_links", [])]
    if not left_out:
        return []
    return [f"- Left out of the suspect's files: {', '.join(left_out)}. Loading this model never runs code that "
            "came with the suspect, even with `trust_remote_code=True`.", ""]


def _training_lines(report: dict) -> list[str]:
    clean = report.get("clean_data")
    if not clean:
        return []
    train = (report.get("settings") or {}).get("train", {})
    unlabelled = report.get("unlabelled_text") or {}
    what = ("clean chats (loss on the answers)" if report.get("task") == "causal-lm"
            else f"clean labelled rows (label counts {clean.get('label_counts')})")
    lines = [f"- Fine-tuned on {clean.get('rows')} {what}, "
             f"{train.get('epochs')} epochs at learning rate {train.get('lr')}, batch size {train.get('batch_size')}."]
    if unlabelled.get("used_for"):
        lines.append(f"- Unlabelled text ({unlabelled.get('rows')} rows) used for: {'; '.join(unlabelled['used_for'])}.")
    return lines + [""]
