"""Attack success rate of an attack's output on an embedded model, judged by its readers (``cpe.attacks.judge``).

    python -m cpe.attacks.evaluate --attack_dir OUT --model DIR [--erasers PATH ...] [--uce FILE | --esd FILE]
        [--json FILE]

Renders the attacked rows (prompt CSV or soft-prompt embeddings) and the same rows' source prompts with
the given (erased) model, sampling exactly as generate.py does with the attack's generation config, and
prints pre- and post-attack ASR with n, judged as the attack's config says (``judge``: the colour/shape toy's
classifiers, or the gallery's identity, style or mark reader; the mark judge also reports the mark counts).
Real Stable Diffusion domains render the attacked CSV with generate.py instead and score it with their detector
(shell_scripts/evaluation/).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from cpe.attacks.runner import EMBEDDINGS, MANIFEST
from cpe.generation.prompt_csv import PromptRow, read_prompt_csv
from cpe.util.io import error_line


def attacked_rows(attack_dir: Path, manifest: dict) -> tuple[list[PromptRow], torch.Tensor | None]:
    """The attack's rows, and for a soft prompt the text-encoder output of each row (N, T, D)."""
    if "embeddings" in manifest["files"]:
        from safetensors.torch import load_file

        embeds = load_file(str(attack_dir / EMBEDDINGS))["prompt_embeds"]
        rows = [PromptRow(r["row"], r["prompt"], r["evaluation_seed"], r["guidance"], r["extra"])
                for r in manifest["rows"]]
        return rows, embeds[[r["embedding"] for r in manifest["rows"]]]
    return read_prompt_csv(attack_dir / manifest["files"]["prompts"]).rows, None


def evaluate_attack(attack_dir: str | Path, model: str, erasers=(), uce: str | None = None,
                    device: str | None = None, esd: str | None = None) -> dict:
    from cpe.attacks.judge import judge_images
    from cpe.attacks.victim import Victim
    from cpe.generation.config import load_gen_config
    from cpe.generation.run import GenerationPipeline

    attack_dir = Path(attack_dir)
    if not (attack_dir / MANIFEST).is_file():
        raise FileNotFoundError(f"no attack results in {attack_dir} ({MANIFEST} missing)")
    manifest = json.loads((attack_dir / MANIFEST).read_text(encoding="utf-8"))
    gen_cfg = load_gen_config(manifest["generation"]["config"], {"data_dir": str(attack_dir)})
    rows, embeds = attacked_rows(attack_dir, manifest)
    victim = Victim(GenerationPipeline(gen_cfg, model, list(erasers), device=device, uce=uce, esd=esd))
    source = [PromptRow(r.row, r.extra["source_prompt"], r.seed, r.guidance, r.extra) for r in rows]
    post = victim.images_from_embeddings(rows, embeds) if embeds is not None else victim.images(rows)
    judge, target = manifest["config"].get("judge", "toy"), manifest["target"]
    pre_verdict = judge_images(judge, victim.images(source), target)
    post_verdict = judge_images(judge, post, target)
    result = {"attack": manifest["attack"], "target": target, "judge": judge, "n": len(rows),
              "victim": victim.records(), "pre_asr": pre_verdict.rate, "post_asr": post_verdict.rate}
    if judge == "mark":
        result |= {"pre_marks": pre_verdict.summary()["marks"], "post_marks": post_verdict.summary()["marks"]}
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--attack_dir", required=True, help="an attack.py output folder")
    p.add_argument("--model", required=True, help="toy or gallery pipeline folder")
    p.add_argument("--erasers", action="append", default=[], metavar="PATH")
    p.add_argument("--uce", metavar="FILE")
    p.add_argument("--esd", metavar="FILE")
    p.add_argument("--device")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    try:
        result = evaluate_attack(args.attack_dir, args.model, args.erasers, args.uce, args.device, args.esd)
    except (OSError, ValueError) as e:
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    text = json.dumps(result)
    if args.json:
        from cpe.util.io import atomic_write_text

        atomic_write_text(args.json, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
