"""Attacks on erased models: soft prompt (white box), UnlearnDiffAtk-style discrete tokens, Ring-A-Bell (black box).

    from cpe.attacks import load_attack_config, load_inputs, run_attack, write_attack
    cfg = load_attack_config("configs/attacks/toy/discrete.yaml")
    gen_cfg, rows, text, victim = load_inputs(cfg, model, erasers=["output/toy/.../circle"])
    write_attack(run_attack(cfg, gen_cfg, rows, text, victim), "output/attacks/discrete", csv_name(gen_cfg))
"""

from cpe.attacks.config import ATTACKS, AttackConfig, load_attack_config
from cpe.attacks.runner import AttackRun, csv_name, load_inputs, run_attack, write_attack

__all__ = ["ATTACKS", "AttackConfig", "AttackRun", "csv_name", "load_attack_config", "load_inputs", "run_attack",
           "write_attack"]
