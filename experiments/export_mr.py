"""Write the defender's files for one seed, so the README experiment runs through the CLI.

    python experiments/export_mr.py --seed 0 --out runs/mr-files
gives clean-seed0.csv (128 labelled dev rows), unlabelled-seed0.csv (the other dev
texts plus MR train texts the victim never saw, 2000 in all) and test.csv.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from finemix.data import load_builtin, stratified_sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clean-rows", type=int, default=128)
    parser.add_argument("--unlabelled-rows", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("runs/mr-files"))
    args = parser.parse_args()
    splits = load_builtin("mr")
    clean = stratified_sample(splits["dev"], args.clean_rows, seed=args.seed)
    chosen = {e.text for e in clean}
    unlabelled = [e.text for e in splits["dev"] if e.text not in chosen]
    seen = {e.text for e in stratified_sample(splits["train"], 4000, seed=args.seed)}  # the victim's rows
    unlabelled += [e.text for e in splits["train"] if e.text not in seen]
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / f"clean-seed{args.seed}.csv", [(e.text, e.label) for e in clean])
    write_csv(args.out / "test.csv", [(e.text, e.label) for e in splits["test"]])
    # CSV, not .txt: some snippets contain line breaks
    with (args.out / f"unlabelled-seed{args.seed}.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text"])
        writer.writerows([t] for t in unlabelled[: args.unlabelled_rows])
    print(f"wrote {args.out}: {len(clean)} clean rows, {min(len(unlabelled), args.unlabelled_rows)} unlabelled texts, {len(splits['test'])} test rows")


def write_csv(path: Path, rows) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


if __name__ == "__main__":
    main()
