"""Jobs (run in children by ``run_job``) for the repair as a whole: building the small backdoored victim,
and ``finemix.repair.steps.purify`` on it."""

from __future__ import annotations

from pathlib import Path

from lib.constants import MINILM_NAME
from lib.fixtures import build_victim, purify_inputs
from lib.probe import Probe


def job_build_victim(params: dict, probe: Probe) -> dict:
    return {"victim": str(build_victim(Path(params["workdir"]), params.get("rows", 1000), params.get("seed", 0)))}


def job_purify(params: dict, probe: Probe) -> dict:
    """``finemix.repair.steps.purify`` with a ``PurifyConfig`` built as cli._purify builds it.

    ``force_all_candidates``: monkeypatch the classification task's acceptance margin to -1 so no
    candidate is accepted and every candidate the search budget allows is trained (the search's worst
    case); a benchmark-only device. ``budget``: the search's, when given (None: unbounded).
    """
    from finemix.config import EpurConfig, MixConfig, PurifyConfig, RatioSearchConfig, TrainConfig
    from finemix.repair.steps import purify
    from finemix.tasks.classification import ClassificationTask

    clean, unlabelled = purify_inputs(params["clean_rows"], params["unlabelled_rows"], params.get("seed", 0))
    train = TrainConfig(seed=0, progress=False, **({"epochs": params["epochs"]} if params.get("epochs") else {}))
    search = RatioSearchConfig(stop_hopeless=params.get("stop_hopeless", True),
                               **({"candidates": tuple(params["candidates"])} if params.get("candidates") else {}),
                               **({"budget": params["budget"]} if "budget" in params else {}))
    auto = params["ratio"] == "auto"
    config = PurifyConfig(
        mix=MixConfig(ratio=0.3 if auto else float(params["ratio"]), mode="random", seed=0),
        ratio_auto=auto,
        search=search,
        epur=EpurConfig(),
        train=train,
        distill=True,
        # 2: finemix purify's default when benchmarks/results were measured (3 since); kept so they reproduce
        distill_epochs=params.get("distill_epochs") or params.get("epochs") or 2.0,
    )
    if params.get("force_all_candidates"):
        ClassificationTask.acceptance_margin = lambda self, reference, rows, tolerance: -1.0
    with probe.region():
        report = purify(params["backdoored"], MINILM_NAME, clean, params["output"], config, unlabelled_texts=unlabelled, force=True)
    search_record = report["ratio_search"]
    return {
        "timings_s": report["timings_s"],
        "mode": search_record["mode"],
        "candidates_trained": [c["ratio"] for c in search_record["candidates"]],
        "candidate_train_seconds": [c["train_seconds"] for c in search_record["candidates"]],
        "candidates_stopped_early": [c.get("stopped_early", False) for c in search_record["candidates"]],
        "candidate_epochs_trained": [c.get("epochs_trained") for c in search_record["candidates"]],
        "not_tried_budget_spent": search_record.get("not_tried_budget_spent", []),
        "chosen_ratio": search_record["chosen_ratio"],
        "reason": search_record["reason"],
        "reference_heldout_accuracy": search_record["reference_heldout_accuracy"],
        "heldout_accuracy": [c["heldout_accuracy"] for c in search_record["candidates"]],
        "clean_rows": len(clean), "unlabelled_rows": len(unlabelled),
    }
