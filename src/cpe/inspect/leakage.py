"""How far each eraser's gate fires on prompts that do not name its concept: the number to check before
generating thousands of images.

For eraser n and prompt p the statistic is the largest gate of n over the prompt's real positions (BOS, its
tokens, EOS) and, apart, over its padding. Prompts are split into those that name n's concept (the whole-word
rule of :func:`cpe.training.prompts.names_target`, on the concept string recorded in the gate file) and those that do
not.
Each of the four groups gets n, median, 95th and 99th percentile and max. Percentiles are numpy's default
(``numpy.percentile``, linear): for n sorted values v_0 <= ... <= v_{n-1} the q-th percentile is
v_i + f (v_{i+1} - v_i) with i + f = (n - 1) q / 100.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from cpe.core.resag import ResAG
from cpe.core.weights import GateFileInfo
from cpe.inspect.gates import TokenGates, eraser_names, token_gates, token_labels
from cpe.models.loading import TextSide
from cpe.training.prompts import names_target

PERCENTILES = {"median": 50.0, "p95": 95.0, "p99": 99.0}
PERCENTILE_RULE = ("linear interpolation between the sorted values (numpy.percentile's default): "
                   "v_i + f (v_{i+1} - v_i) with i + f = (n - 1) q / 100")
TOKENS = ("real", "padding")
GROUPS = ("names", "others")  # prompts that name the eraser's concept, and all the others
RECORDED_SECTIONS = ("prompts", "anchors")  # the training settings that decide where a gate fires


def distribution(values: Sequence[float]) -> dict[str, float | int | None]:
    """n, median, p95, p99 and max of ``values`` (``None`` statistics when there are none)."""
    array = np.asarray(values, dtype=np.float64)
    if not array.size:
        return {"n": 0, **dict.fromkeys(PERCENTILES), "max": None}
    stats = {name: float(np.percentile(array, q)) for name, q in PERCENTILES.items()}
    return {"n": int(array.size), **stats, "max": float(array.max())}


def training_record(info: GateFileInfo) -> tuple[dict | None, str]:
    """The gate file's training settings that decide where its gate fires (whatever the ``prompts`` and ``anchors``
    sections hold), or ``None`` and why there are none."""
    if info.file_format == "released":
        return None, "released file: carries no training record"
    record = {section: info.training_config[section] for section in RECORDED_SECTIONS
              if section in info.training_config}
    return (record, "") if record else (None, "no training record in the file")


@dataclass
class Worst:
    """A prompt that does not name the concept, where the eraser's gate is largest."""

    prompt: str
    gate: float
    position: int
    token: str
    padding: bool


@dataclass
class EraserLeakage:
    name: str
    concept: str
    stats: dict[str, dict[str, dict]]  # tokens ("real" / "padding") -> group ("names" / "others") -> distribution
    worst: list[Worst]
    file: str = ""
    file_format: str = ""
    settings: dict | None = None  # the training record (``training_record``)
    settings_note: str = ""


@dataclass
class LeakageReport:
    erasers: list[EraserLeakage]
    prompts: int
    sources: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"prompts": self.prompts, "sources": self.sources, "percentiles": PERCENTILE_RULE,
                "erasers": [asdict(eraser) for eraser in self.erasers]}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, ensure_ascii=False) + "\n"

    def to_markdown(self) -> str:
        sources = ", ".join(f"`{s}`" for s in self.sources)
        lines = [
            "# Gate leakage", "",
            f"{self.prompts} prompts{' from ' + sources if sources else ''}. Each row: over the prompts, the "
            "eraser's largest gate on the prompt's real tokens (BOS, words, EOS) or on its padding; *names it*: "
            "the prompt holds the eraser's concept as whole words (any case). A gate near 1 on prompts that do "
            f"not name the concept is leakage. Percentiles: {PERCENTILE_RULE}.", "",
            "| eraser | tokens | names it: n | median | p95 | p99 | max | others: n | median | p95 | p99 | max |",
            "|---|---|" + "---:|" * 10,
        ]
        for eraser in self.erasers:
            for tokens in TOKENS:
                cells = [_stat(eraser.stats[tokens][group][key]) for group in GROUPS
                         for key in ("n", *PERCENTILES, "max")]
                lines.append(f"| {_cell(eraser.name) if tokens == 'real' else ''} | {tokens} | " + " | ".join(cells)
                             + " |")
        lines += ["", "## Worst leakage: prompts not naming the concept, largest gate on any position", "",
                  "| eraser | gate | token (position) | prompt |", "|---|---:|---|---|"]
        for eraser in self.erasers:
            for w in eraser.worst:
                where = f"{w.token} ({w.position}{', padding' if w.padding else ''})"
                lines.append(f"| {_cell(eraser.name)} | {w.gate:.3f} | {_cell(where)} | {_cell(w.prompt)} |")
        lines += ["", "## Training settings recorded in the gate files", ""]
        for eraser in self.erasers:
            settings = eraser.settings_note if eraser.settings is None else "; ".join(
                f"{key} = {json.dumps(value, ensure_ascii=False)}" for key, value in _flat(eraser.settings))
            lines.append(f"- **{_cell(eraser.name)}** (`{eraser.file}`): {settings}")
        return "\n".join(lines) + "\n"


def _stat(value: float | int | None) -> str:
    return "—" if value is None else str(value) if isinstance(value, int) else f"{value:.3f}"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _flat(record: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Nested sections as ``section.key`` pairs."""
    out = []
    for key, value in record.items():
        if isinstance(value, dict) and value:
            out += _flat(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def leakage_of(found: TokenGates, tokenizer, concepts: Sequence[str], names: Sequence[str] | None = None,
               top: int = 5) -> list[EraserLeakage]:
    """The leakage statistics of gates already computed (``concepts[n]``: eraser n's concept string)."""
    count = found.gates.shape[1]
    if len(concepts) != count:
        raise ValueError(f"{len(concepts)} concept strings for {count} erasers")
    real = found.real()
    on_real = found.gates.masked_fill(~real[:, None, :], -1.0).amax(dim=2)  # (P, N)
    on_padding = found.gates.masked_fill(real[:, None, :], -1.0).amax(dim=2)  # -1: the prompt fills every position
    erasers = []
    for n, concept in enumerate(concepts):
        naming = np.array([names_target(prompt, concept) for prompt in found.prompts], dtype=bool)
        stats = {}
        for tokens, values in (("real", on_real[:, n].numpy()), ("padding", on_padding[:, n].numpy())):
            present = values >= 0
            stats[tokens] = {"names": distribution(values[naming & present]),
                             "others": distribution(values[~naming & present])}
        others = torch.from_numpy(np.flatnonzero(~naming))
        peak = found.gates[others, n].amax(dim=1)
        worst = []
        for i in peak.argsort(descending=True, stable=True)[:top].tolist():
            p = int(others[i])
            position = int(found.gates[p, n].argmax())
            length = int(found.lengths[p])
            worst.append(Worst(found.prompts[p], float(peak[i]), position,
                               token_labels(tokenizer, found.ids[p], length)[position], position >= length))
        erasers.append(EraserLeakage(names[n] if names else concept, concept, stats, worst))
    return erasers


def leakage(text_side: TextSide, resag: ResAG, concepts: Sequence[str], prompts: Sequence[str], *,
            infos: Sequence[GateFileInfo] | None = None, top: int = 5, batch_size: int = 64,
            sources: Sequence[str] = ()) -> LeakageReport:
    """Each eraser's gate distributions over ``prompts`` (see the module doc); ``infos`` (the erasers' gate files,
    as ``load_erasers`` returns them) adds their names, files and training records."""
    found = token_gates(text_side, resag, prompts, batch_size)
    names = eraser_names(infos) if infos else None
    erasers = leakage_of(found, text_side.tokenizer, concepts, names, top)
    for eraser, info in zip(erasers, infos or (), strict=False):
        eraser.file, eraser.file_format = str(info.path), info.file_format
        eraser.settings, eraser.settings_note = training_record(info)
    return LeakageReport(erasers, len(found.prompts), [str(s) for s in sources])
