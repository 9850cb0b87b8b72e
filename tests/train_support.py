"""Small training configs on the tiny pipeline, shared by the training and CLI tests."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import yaml

TEMPLATES = ["a photo of {concept}", "{concept} smiling", "{concept} on stage"]
GENERAL = ["a singer", "movie stars", "a politician"]
CANDIDATES = ["tom hanks", "meryl streep", "adam driver jr", "julia roberts", "keanu reeves"]


def small_config(folder: Path, model: Path, concepts=("adam driver", "emma stone", "bob dylan"), **sections) -> Path:
    """A complete training YAML with a few templates and anchors; ``sections`` update its sections."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "templates.csv").write_text("prompt\n" + "\n".join(TEMPLATES) + "\n", encoding="utf-8")
    (folder / "general.csv").write_text("key\n" + "\n".join(GENERAL) + "\n", encoding="utf-8")
    (folder / "candidates.csv").write_text("key\n" + "\n".join(CANDIDATES) + "\n", encoding="utf-8")
    (folder / "concepts.yaml").write_text(yaml.safe_dump([{"target": c} for c in concepts]), encoding="utf-8")
    config = {
        "model": {"path": str(model), "device": "cpu"},
        "prompts": {"concepts": "concepts.yaml", "templates": "templates.csv", "neutral": "a person"},
        "anchors": {"general_words": "general.csv", "candidates": "candidates.csv", "top_k": 2, "per_step": 4},
        "train": {"num_stages": 2, "iterations": 4, "factor_init_iter": 2, "lr_warmup_steps": 1},
        "adversarial": {"num_embeddings": 2, "iterations": 3, "lr_warmup_steps": 1},
        "save": {"root": str(folder / "out"), "experiment": "exp", "name": "cpe"},
        "logging": {"every": 1},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@contextmanager
def interrupted_in_stage_two(monkeypatch):
    """Within the block, training stops with KeyboardInterrupt when stage 2's erase phase starts (a kill between
    stages, after stage 1's checkpoint); the real stage loop is back afterwards."""
    from cpe import training

    real_erase = training.BatchTrainer._erase

    def killed_in_stage_two(self, stage, logger):
        if stage == 1:
            raise KeyboardInterrupt
        real_erase(self, stage, logger)

    monkeypatch.setattr(training.BatchTrainer, "_erase", killed_in_stage_two)
    try:
        yield
    finally:
        monkeypatch.setattr(training.BatchTrainer, "_erase", real_erase)
