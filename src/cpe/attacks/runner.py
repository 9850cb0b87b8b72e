"""Run one attack on the rows of a prompt CSV and write what it found, with its budget, atomically.

Outputs in ``out``: the attacked prompts as a prompt CSV with the generation config's file name (so
``generate.py --config <same config> --data_dir <out>`` renders them and ``cpe.metrics`` score them: the
CSV keeps ``evaluation_seed`` and every other column, plus ``source_prompt`` and ``source_row``), or, for
the soft prompt, ``embeddings.safetensors`` (text-encoder inputs and outputs per attacked prompt); and
``attack_manifest.json`` (attack, config, seed, target, banned words, victim and erasers with SHA-256,
budget: steps, queries, seconds; per-prompt losses). Each distinct prompt is attacked once, with its own
random stream seeded from (seed, prompt), so a result depends only on the seed and that prompt.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from cpe.attacks.config import AttackConfig
from cpe.attacks.discrete import discrete_prompt
from cpe.attacks.ringabell import concept_vector, ringabell_prompt
from cpe.attacks.soft import soft_prompt
from cpe.attacks.victim import TextSide, Victim
from cpe.attacks.vocab import (
    allowed_token_ids,
    check_round_trip,
    concept_token_ids,
    decode_words,
    read_words,
    restrict_to_words,
)
from cpe.generation.prompt_csv import GUIDANCE_COLUMN, PromptRow, read_prompt_csv
from cpe.training.prompts import names_target, target_pattern
from cpe.util.io import atomic_write, atomic_write_text

MANIFEST = "attack_manifest.json"
EMBEDDINGS = "embeddings.safetensors"


@dataclass
class AttackRun:
    """An attack's result: one attacked row per input row (soft: same prompt, ``embedding`` index), manifest."""

    rows: list[PromptRow]
    manifest: dict
    prompt_embeds: Tensor | None = None  # soft: (distinct prompts, T, D)
    token_embeddings: Tensor | None = None
    embedding_index: list[int] = field(default_factory=list)  # soft: row -> embedding

    def images(self, victim: Victim):
        """The victim's images of the attacked rows (soft: from the optimised prompt embeddings)."""
        if self.prompt_embeds is not None:
            return victim.images_from_embeddings(self.rows, self.prompt_embeds[self.embedding_index])
        return victim.images(self.rows)


def prompt_seed(seed: int, prompt: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()[:8], "little") >> 1


def without_target(prompt: str, targets: list[str], neutral: str | None) -> str:
    """``prompt`` with every target word replaced by ``neutral`` (None or "": removed)."""
    for target in targets:
        prompt = target_pattern(target).sub(lambda _: neutral or "", prompt)
    return prompt


def names_any(prompt: str, targets: list[str]) -> bool:
    return any(names_target(prompt, target) for target in targets)


def attack_rows(cfg: AttackConfig, gen_cfg) -> list[PromptRow]:
    """The CSV rows to attack (those naming the target unless ``filter_rows`` is off); none is an error."""
    path = gen_cfg.resolved_prompt_path()
    rows = read_prompt_csv(path, cfg.first_row, cfg.last_row).rows
    if cfg.filter_rows:
        rows = [row for row in rows if names_any(row.prompt, cfg.target_words())]
        if not rows:
            raise ValueError(f"target {' / '.join(cfg.target_words())!r} is not in the vocabulary of the attacked "
                             f"prompts: no row of {path} names it")
    if not rows:
        raise ValueError(f"no prompt rows to attack in {path}")
    return rows


def _versions() -> dict:
    import diffusers
    import transformers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__}


def run_attack(cfg: AttackConfig, gen_cfg, rows: list[PromptRow], text: TextSide, victim: Victim | None) -> AttackRun:
    """Attack every distinct prompt of ``rows``; ``victim`` is None for the black-box attack."""
    started = time.perf_counter()
    for word in cfg.target_words():
        concept_token_ids(text.tokenizer, word)
    banned = [*cfg.target_words(), *cfg.ban]
    allowed = allowed_token_ids(text.tokenizer, banned)
    prompts = list(dict.fromkeys(row.prompt for row in rows))
    section = cfg.section()
    results, attacked, per_prompt = {}, {}, []
    queries = 0
    vector = None
    if cfg.attack == "ringabell" and cfg.ringabell.words_from:
        paths = [cfg.path(p) for p in cfg.ringabell.words_from]
        words = [w for p in paths for w in read_words(p)]
        where = "ringabell.words_from " + ", ".join(map(str, paths))
        allowed = restrict_to_words(text.tokenizer, allowed, words, where)
    if cfg.attack == "ringabell":
        vector = concept_vector(text, [(p, without_target(p, cfg.target_words(), cfg.neutral)) for p in prompts])
    for prompt in prompts:
        generator = torch.Generator().manual_seed(prompt_seed(cfg.seed, prompt))
        if cfg.attack == "ringabell":
            benign = without_target(prompt, cfg.target_words(), cfg.neutral)
            result = ringabell_prompt(text, benign, vector, section, generator, allowed)
            attacked[prompt] = decode_words(text.tokenizer, result.tokens)
            check_round_trip(text.tokenizer, attacked[prompt], result.tokens)
            queries += result.queries
            per_prompt.append({"prompt": prompt, "benign": benign, "attacked": attacked[prompt], "loss": result.loss,
                               "loss_before": result.loss_before})
            continue
        seeds = torch.randint(2**31 - 1, (cfg.target_images,), generator=generator).tolist()
        x0 = victim.concept_latents(prompt, seeds)
        count = section.tokens if cfg.attack == "discrete" else section.free_tokens
        init = allowed[torch.randint(len(allowed), (max(count, 1),), generator=generator)]  # random allowed words
        if cfg.attack == "soft":
            results[prompt] = soft_prompt(victim, prompt, x0, section, generator, init)
            attacked[prompt] = prompt
        else:
            result = discrete_prompt(victim, prompt, x0, section, generator, allowed, init)
            adv = decode_words(text.tokenizer, result.tokens)
            attacked[prompt] = f"{adv} {prompt}"
            check_round_trip(text.tokenizer, attacked[prompt], [*result.tokens, *text.word_ids(prompt)])
            results[prompt] = result
        r = results[prompt]
        per_prompt.append({"prompt": prompt, "attacked": attacked[prompt], "target_image_seeds": seeds,
                           "loss": r.loss, "loss_before": r.loss_before})
    if victim is not None:
        queries = victim.unet_evaluations
    out_rows = [PromptRow(row.row, attacked[row.prompt], row.seed, row.guidance,
                          {**row.extra, "source_prompt": row.prompt, "source_row": str(row.row)}) for row in rows]
    steps = {"soft": lambda s: s.steps, "discrete": lambda s: s.steps,
             "ringabell": lambda s: s.generations}[cfg.attack](section)
    manifest = {
        "attack": cfg.attack,
        "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("soft", "discrete", "ringabell")}
        | {cfg.attack: dataclasses.asdict(section)},
        "target": cfg.target,
        "banned_words": banned,
        "allowed_tokens": len(allowed),
        "seed": cfg.seed,
        "black_box": victim is None,
        "victim": victim.records() if victim is not None else {"model": "", "erasers": []},
        "generation": {"config": str(cfg.path(cfg.gen_config)), **gen_cfg.image_settings(),
                       "prompt_csv": str(gen_cfg.resolved_prompt_path())},
        "budget": {"prompts": len(prompts), "steps_per_prompt": steps, "queries": queries,
                   "query_unit": "text-encoder evaluations" if victim is None else "UNet sample evaluations",
                   "seconds": round(time.perf_counter() - started, 2)},
        "per_prompt": per_prompt,
        "versions": _versions(),
    }
    run = AttackRun(out_rows, manifest)
    if cfg.attack == "soft":
        run.prompt_embeds = torch.stack([results[p].prompt_embeds for p in prompts])
        run.token_embeddings = torch.stack([results[p].token_embeddings for p in prompts])
        run.embedding_index = [prompts.index(row.prompt) for row in rows]
    return run


def _csv_text(rows: list[PromptRow]) -> str:
    extra = list(dict.fromkeys(key for row in rows for key in row.extra))
    guidance = any(row.guidance is not None for row in rows)
    columns = ["prompt", "evaluation_seed", *([GUIDANCE_COLUMN] if guidance else []), *extra]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        record = {"prompt": row.prompt, "evaluation_seed": row.seed, **row.extra}
        if guidance:
            record[GUIDANCE_COLUMN] = "" if row.guidance is None else row.guidance
        writer.writerow(record)
    return buffer.getvalue()


def check_output(out: str | Path, overwrite: bool) -> Path:
    """``out`` as a path; an earlier attack's results there are an error unless ``overwrite``."""
    out = Path(out)
    if (out / MANIFEST).exists() and not overwrite:
        raise FileExistsError(f"{out / MANIFEST} exists; refusing to overwrite an attack's results (pass --overwrite)")
    return out


def write_attack(run: AttackRun, out: str | Path, csv_name: str, overwrite: bool = False) -> dict[str, Path]:
    """Write the attack's files into ``out`` (refusing to replace an earlier attack unless ``overwrite``)."""
    out = check_output(out, overwrite)
    files = {}
    if run.prompt_embeds is None:
        files["prompts"] = atomic_write_text(out / csv_name, _csv_text(run.rows))
    else:
        tensors = {"prompt_embeds": run.prompt_embeds.contiguous(),
                   "token_embeddings": run.token_embeddings.contiguous()}
        files["embeddings"] = atomic_write(out / EMBEDDINGS, lambda tmp: save_file(tensors, str(tmp)))
        run.manifest["rows"] = [{"row": r.row, "prompt": r.prompt, "evaluation_seed": r.seed, "embedding": i,
                                 "guidance": r.guidance, "extra": r.extra}
                                for r, i in zip(run.rows, run.embedding_index, strict=True)]
    run.manifest["files"] = {key: path.name for key, path in files.items()}
    files["manifest"] = atomic_write_text(out / MANIFEST, json.dumps(run.manifest, indent=2, default=str) + "\n")
    return files


def csv_name(gen_cfg) -> str:
    """The attacked CSV's name inside the output folder: the generation config's ``prompt_path`` (relative)."""
    path = Path(gen_cfg.prompt_path)
    return path.name if path.is_absolute() else str(path)


def load_inputs(cfg: AttackConfig, model: str, erasers=(), uce: str | Path | None = None, device: str | None = None,
                data_dir: str | None = None, esd: str | Path | None = None):
    """Generation config, rows to attack, text side and (white box) the erased model: ``(gen_cfg, rows, text, victim)``.

    The black-box attack loads only the tokenizer and the text encoder: erasers, UCE and ESD-x edits are not used.
    """
    from cpe.generation.config import load_gen_config
    from cpe.generation.run import GenerationPipeline
    from cpe.models.loading import TextSide as PipelineText
    from cpe.models.loading import resolve_device

    config_dir = data_dir or (str(cfg.path(cfg.data_dir)) if cfg.data_dir else None)
    gen_cfg = load_gen_config(cfg.path(cfg.gen_config), {"data_dir": config_dir})
    rows = attack_rows(cfg, gen_cfg)
    if cfg.attack == "ringabell":
        side = PipelineText.load(model, device=resolve_device(device))
        if side.kind != "sd":
            raise ValueError(f"{model}: the attacks support SD 1.x / 2.x pipelines (one text encoder), not {side.kind}")
        text = TextSide(side.tokenizer, side.encoders[0])
        return gen_cfg, rows, text, None
    victim = Victim(GenerationPipeline(gen_cfg, model, erasers, device=resolve_device(device), uce=uce, esd=esd))
    return gen_cfg, rows, victim.text, victim
