"""Golden sets: fixed JSONL files in the package, generated once from documented seeds and never
regenerated silently (a test rebuilds them from the seeds and requires byte-identical files; changing
a generator therefore fails CI until the files are rewritten on purpose with `--write`).

Splits: `dev` (seed 20261126) for development and gates, `test` (seed 20261127) for reporting only.
Each split: 40 examples per skill and level; lookup questions share 4 documents per level.

    python -m joulepath.quality.golden --write   # rewrite both splits (a deliberate act)
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import asdict
from importlib import resources
from pathlib import Path

from joulepath.quality.tasks import LEVELS, SKILLS, Example, gen_lookup, generate, make_document

SEEDS = {"dev": 20261126, "test": 20261127}
PER_CELL = 40
DOCS_PER_LEVEL = 4


SERVED_PER_CELL = 20  # `joulepath run` serves each dev cell's first 20 examples; the rest of each cell is where the
# router (serving/router.py) is fitted, so it never routes a request it was fitted on


def build(split: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(examples without document text, documents) for a split, from its seed."""
    rng = random.Random(SEEDS[split])
    examples: list[dict[str, str]] = []
    documents: list[dict[str, str]] = []
    for level in LEVELS:
        docs = []
        for i in range(DOCS_PER_LEVEL):
            doc_id = f"{split}-{level}-{i}"
            text, values = make_document(rng, level, doc_id)
            docs.append((text, values, doc_id))
            documents.append({"doc_id": doc_id, "level": level, "text": text})
        for skill in SKILLS:
            for j in range(PER_CELL):
                ex = (
                    gen_lookup(rng, level, docs[j % DOCS_PER_LEVEL])
                    if skill == "lookup"
                    else generate(skill, level, rng)
                )
                row = {k: v for k, v in asdict(ex).items() if k != "document"}
                examples.append(row)
    return examples, documents


def _path(split: str, kind: str) -> Path:
    return Path(str(resources.files("joulepath.quality").joinpath("data", f"golden_{split}_{kind}.jsonl")))


def _dump(rows: list[dict[str, str]]) -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)


def write(split: str) -> None:
    examples, documents = build(split)
    _path(split, "examples").write_text(_dump(examples), encoding="utf-8")
    _path(split, "documents").write_text(_dump(documents), encoding="utf-8")


def load(
    split: str = "dev",
    skills: tuple[str, ...] = SKILLS,
    levels: tuple[str, ...] = LEVELS,
    per_cell: int | None = None,
    skip_per_cell: int = 0,
) -> list[Example]:
    """Golden examples of a split, documents attached; `per_cell` takes the first n of each cell after
    skipping its first `skip_per_cell`."""
    if split not in SEEDS:
        raise ValueError(f"unknown golden split {split!r}; splits: {', '.join(SEEDS)}")
    docs = {}
    for line in _path(split, "documents").read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        docs[d["doc_id"]] = d["text"]
    out: list[Example] = []
    counts: dict[tuple[str, str], int] = {}
    for line in _path(split, "examples").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        cell = (row["skill"], row["level"])
        if row["skill"] not in skills or row["level"] not in levels:
            continue
        seen = counts.get(cell, 0)
        counts[cell] = seen + 1
        if seen < skip_per_cell or (per_cell is not None and seen >= skip_per_cell + per_cell):
            continue
        out.append(Example(document=docs.get(row["doc_id"], ""), **row))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite the golden files from their seeds")
    if parser.parse_args().write:
        for split in SEEDS:
            write(split)
            print(f"wrote golden {split}")


if __name__ == "__main__":
    main()
