"""Each data set's rows for one seed: the victim's training rows, the defender's pools, the test rows."""

from __future__ import annotations

import dataclasses

from ..errors import FinemixError
from .config import DatasetPlan


@dataclasses.dataclass(frozen=True)
class DatasetSplits:
    train: list
    test: list
    clean_pool: list  # labelled rows the defender may be given (dev split)
    unlabelled_pool: list[str]  # in-domain texts the victim never saw
    labels: dict[int, str]


def dataset_splits(name: str, plan: DatasetPlan, seed: int) -> DatasetSplits:
    from ..data import BUILTIN_LABELS, load_builtin, load_examples, load_hub, stratified_sample

    if plan.train_file:
        label2id = {label: i for i, label in enumerate(plan.labels)}
        splits = {split: load_examples(getattr(plan, f"{split}_file"), label2id=label2id, num_labels=len(label2id))
                  for split in ("train", "dev", "test")}
        labels = dict(enumerate(plan.labels))
    elif name.startswith("hf:"):
        splits, labels = load_hub(name)
    else:
        splits, labels = load_builtin(name), BUILTIN_LABELS.get(name, {})
    if "train" not in splits:
        raise FinemixError(f"data set {name!r} is evaluation-only; it cannot train victims")
    train = stratified_sample(splits["train"], min(plan.train_rows, len(splits["train"])), seed=seed)
    test = stratified_sample(splits["test"], min(plan.test_rows, len(splits["test"])), seed=0)
    seen = {(e.text, e.text_b) for e in train}
    unseen = [e for e in splits["train"] if (e.text, e.text_b) not in seen]
    texts = [t for e in splits["dev"] + unseen for t in ([e.text] if e.text_b is None else [])]
    # pairs: unlabelled "text" would lose the pairing, so only single-text sets get unlabelled text
    return DatasetSplits(train, test, splits["dev"], texts, labels)
