"""The repair's honest verdict: what the clean data can and cannot vouch for.

The defender cannot measure a backdoor, only clean accuracy on the held-out slice. So the
verdict says when even that weak evidence is missing or bad, and what it means for the user:
- no held-out slice (too few clean rows): nothing checked the repair at all;
- the ρ rule found no candidate within its tolerance of the unrepaired model: the most
  accurate one was kept, which is the one that kept most of the suspect's weights, so the
  backdoor may well survive;
- the repaired model's held-out accuracy is below the unrepaired model's by more than the
  tolerance (a fixed ρ, or any ρ): the repair cost accuracy the defender will notice, and a
  model that weak may still follow a trigger.
- E-PUR's reset cleared a trigger confirmed on the clean rows, so nothing was mixed
  (repair/epur_check.py): ok, with the caveat that a trigger E-PUR cannot see would survive;
- a word confirmed as a trigger on the suspect still acts as one on the repaired model (the
  trigger probe of ``flagged_word_guard``): the backdoor very likely survives.
``finemix purify`` prints the warnings and ``--strict`` turns them into exit status 3.
"""

from __future__ import annotations

from ..core.ratio_rule import accepted

ADVICE = ("what to try: more clean labelled rows, or unlabelled in-domain text (--unlabelled-text), "
          "which lets the repair distil the suspect's clean behaviour")


def repair_verdict(search: dict, tolerance: float, task=None) -> dict:
    """{"status": "ok" | "warning", "warnings": [...], "summary": str} from a ρ search record
    (``task``'s acceptance margin; classification's by default)."""
    from ..tasks.classification import CLASSIFICATION
    from .epur_check import CLEARED_MODE
    from .ratio_search import chosen_candidate

    if search.get("mode") == CLEARED_MODE:
        return {"status": "ok", "warnings": [], "summary": search["reason"]}
    warnings = []
    chosen = chosen_candidate(search)
    reference, rows = search.get("reference_heldout_accuracy"), search.get("heldout_rows", 0)
    measure = search.get("measure", "held-out accuracy")
    if not rows or reference is None:
        warnings.append("too few clean rows to hold any out: nothing checked the repaired model; "
                        "the backdoor may survive and accuracy may have dropped unnoticed")
    elif search.get("accepted") is False:
        warnings.append(f"no ρ candidate kept its {measure} within {search['accepted_drop']:.3f} of the unrepaired "
                        f"model's {reference:.3f}; the most accurate (ρ = {search['chosen_ratio']}) was kept, on no evidence "
                        "that it is both repaired and accurate: the backdoor may survive")
    elif chosen is not None:
        margin = search.get("accepted_drop") or (task or CLASSIFICATION).acceptance_margin(reference, rows, tolerance)
        accuracy = chosen.get("heldout_accuracy")
        if accuracy is not None and not accepted(accuracy, reference, margin):
            warnings.append(f"the repaired model's {measure} {accuracy:.3f} is below the unrepaired "
                            f"{reference:.3f} by more than {margin:.3f}: a weakened model may still follow a trigger")
    surviving = ((chosen or {}).get("trigger_probe") or {}).get("surviving")
    if surviving:
        rates = ", ".join(f"'{w}' {100 * chosen['trigger_probe']['flip'][w]:.0f} %" for w in surviving)
        warnings.append(f"words that acted as triggers on the suspect still move half the clean rows or more to one "
                        f"class on the repaired model ({rates}): the backdoor very likely survives, unless the word "
                        "carries the task's own meaning (a strong sentiment word)")
    if not warnings:
        return {"status": "ok", "warnings": [],
                "summary": f"the repaired model kept its {measure}; clean data cannot show a backdoor "
                           "is gone, only that the repair did not visibly break the model"}
    return {"status": "warning", "warnings": warnings, "summary": "; ".join(warnings) + f"; {ADVICE}"}
