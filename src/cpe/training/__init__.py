"""CPE training (method.md §2): stage loop, optimisers, schedules, checkpoints, resume, many concepts per run.

One process loads the text encoder and only the UNet's cross-attention weights, then trains its share of
the concept range in batches of ``train.concept_batch`` concepts side by side (slot c of one ResAG per
concept). Every concept owns a random stream seeded from (train_seed, target) that drives its init,
template and anchor draws, noise, mixup and adversarial banks, and the losses of different concepts are
summed (the optimisers are element-wise), so a concept's weights do not depend on its neighbours.

The package is split by job:
* ``files``: a concept's output files, the settings fingerprint, checkpoints;
* ``data``: the frozen model side (tokenizer, text encoder, cross-attention weights) and each concept's
  prompts, embeddings and anchor pool;
* ``loop``: optimisers, LR schedules, the JSONL log and the stage loop of one concept batch;
* ``run``: which concepts to train (skip, resume, overwrite), process sharding, the whole run.
"""

from cpe.training.data import (
    ConceptData,
    FrozenModel,
    PromptSide,
    anchor_prompts,
    concept_seed,
    encode_prompt_side,
    load_frozen,
    load_prompt_side,
    prepare_batch,
    read_prompt_lists,
)
from cpe.training.files import CHECKPOINT, LOG_FILE, ConceptPaths, TrainingError, fingerprint
from cpe.training.loop import BatchTrainer, Phase, RunLog, adversarial_phase, erase_phase, make_optimizer, run_phase
from cpe.training.run import TrainSummary, batches, concept_range, describe, plan, selected_concepts, train

__all__ = [
    "CHECKPOINT", "LOG_FILE", "BatchTrainer", "ConceptData", "ConceptPaths", "FrozenModel", "Phase", "PromptSide",
    "RunLog", "TrainSummary", "TrainingError", "adversarial_phase", "anchor_prompts", "batches", "concept_range",
    "concept_seed", "describe", "encode_prompt_side", "erase_phase", "fingerprint", "load_frozen",
    "load_prompt_side", "make_optimizer", "plan", "prepare_batch", "read_prompt_lists", "run_phase",
    "selected_concepts", "train",
]
