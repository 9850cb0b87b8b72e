"""Training config: defaults in one place, validated at load, typed overrides."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cpe.training.config import load_train_config
from cpe.util.config import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_unknown_key_is_an_error_naming_key_and_file(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("anchors:\n  sentences: s.csv\ntrain:\n  iteratons: 5\n")
    with pytest.raises(ConfigError, match=r"train\.yaml: unknown key 'train\.iteratons'"):
        load_train_config(path)


def test_unknown_override_key_and_bad_type_are_errors(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("anchors:\n  sentences: s.csv\n")
    with pytest.raises(ConfigError, match="unknown key 'network.rank'"):
        load_train_config(path, ["network.rank=4"])
    with pytest.raises(ConfigError, match="train.iterations must be an integer, got 'many'"):
        load_train_config(path, ["train.iterations=many"])
    with pytest.raises(ConfigError, match="train.num_stages must be >= 1"):
        load_train_config(path, ["train.num_stages=0"])


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("celebs", dict(g=0.3, pal=1e5, r=16, k=1, stages=5, it=450, f_it=4, s=32, p=16, adv_it=450, warm=5)),
        ("artists", dict(g=0.5, pal=1e4, r=16, k=1, stages=10, it=450, f_it=4, s=16, p=16, adv_it=450, warm=5)),
        ("explicit", dict(g=3.0, pal=1e4, r=64, k=4, stages=20, it=1200, f_it=2, s=16, p=32, adv_it=1200, warm=10)),
    ],
)
def test_domain_configs_hold_the_paper_hyperparameters(domain, expected):
    cfg = load_train_config(CONFIGS / domain / "train.yaml")
    t, a = cfg.train, cfg.adversarial
    got = dict(g=t.guidance, pal=t.pal, r=cfg.network.gate_rank, k=cfg.network.lora_rank, stages=t.num_stages,
               it=t.iterations, f_it=t.factor_init_iter, s=cfg.anchors.per_step, p=a.num_embeddings,
               adv_it=a.iterations, warm=t.lr_warmup_steps)
    assert got == expected
    assert (t.lr, t.factor_init_lr, t.factor_init_lr_cycle, t.lr_cycles, a.lr) == (3e-5, 10, 2, 1, 0.01)
    assert cfg.anchors.noise_scale == 0.001 and cfg.anchors.mixup and t.seed == 2024
    for key in ("concepts", "templates"):
        assert cfg.path(getattr(cfg.prompts, key)).is_file()


def test_experiment_folder_is_filled_from_the_effective_values():
    cfg = load_train_config(CONFIGS / "celebs" / "train.yaml", ["train.guidance=0.5", "anchors.noise_scale=0.01"])
    assert cfg.experiment_name() == "celeb_single_guide0.5_pal100000.0_gate_rank16_noise0.01"


def test_configs_built_in_code_are_checked_and_name_the_key():
    from cpe.generation.config import GenerationConfig
    from cpe.training.config import EraseConfig, NetworkConfig
    from cpe.util.config import FieldError

    with pytest.raises(FieldError, match=r"^EraseConfig\.num_stages must be >= 1, got 0$"):
        EraseConfig(num_stages=0)
    with pytest.raises(FieldError, match=r"^NetworkConfig\.key_mode must be one of query_as_key, separate_key"):
        NetworkConfig(key_mode="other")
    with pytest.raises(FieldError, match=r"^GenerationConfig\.prompt_path is required"):
        GenerationConfig()
    with pytest.raises(FieldError, match=r"^GenerationConfig\.width must be an integer, got 1\.5$"):
        GenerationConfig(prompt_path="p.csv", width=1.5)
    assert EraseConfig(pal="1e5", iterations=7.0).pal == 1e5  # YAML reads 1e5 as a string
    assert isinstance(EraseConfig(iterations=7.0).iterations, int)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.optimizer=sgd", "train.optimizer must be one of adamw, adamw8bit, got 'sgd'"),
        ("model.dtype=float8", "model.dtype must be one of float32, fp32, float16"),
        ("train.lr_scheduler=cosine_restarts", "train.lr_scheduler must be one of constant, "),
        ("network.key_mode=both", "network.key_mode must be one of query_as_key, separate_key, got 'both'"),
        ("anchors.noise_scale=-1", "anchors.noise_scale must be >= 0, got -1.0"),
        ("train=5", "train must be a mapping (a section), got 5"),
    ],
)
def test_closed_choices_and_bounds_are_errors_naming_key_and_file(tmp_path, override, message):
    path = tmp_path / "train.yaml"
    path.write_text("anchors:\n  sentences: s.csv\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: {re.escape(message)}"):
        load_train_config(path, [override])


def test_literal_choices_are_the_ones_the_code_accepts():
    import typing

    from diffusers.optimization import SchedulerType

    from cpe.core.resag import KEY_MODES
    from cpe.models.loading import resolve_dtype
    from cpe.training.config import LRScheduler, NetworkConfig
    from cpe.util.config import DTypeName

    assert typing.get_args(typing.get_type_hints(NetworkConfig)["key_mode"]) == KEY_MODES
    assert set(typing.get_args(LRScheduler)) <= {s.value for s in SchedulerType}
    assert [resolve_dtype(name).itemsize for name in typing.get_args(DTypeName)] == [4, 4, 2, 2, 2, 2, 8]


def test_model_path_resolves_like_the_other_paths_but_keeps_hub_ids(tmp_path, monkeypatch):
    from cpe.toy import TOY_MODEL_DIR
    from cpe.util.config import REPO_ROOT

    (tmp_path / "configs" / "beside").mkdir(parents=True)
    path = tmp_path / "configs" / "train.yaml"
    path.write_text("anchors:\n  sentences: s.csv\n")
    monkeypatch.chdir(tmp_path / "configs" / "beside")  # any other folder: nothing depends on it
    folder = tmp_path / "configs"
    expected = {
        "CompVis/stable-diffusion-v1-4": "CompVis/stable-diffusion-v1-4",  # a hub id stays a hub id
        "beside": str(folder / "beside"),  # a folder that exists beside the config
        "./model": str(folder / "model"),  # written as a path: beside the config even before it exists
        "../other/model": str(folder / "../other/model"),
        "{root}/src/cpe/toy/assets/pipeline": str(REPO_ROOT / "src/cpe/toy/assets/pipeline"),
        str(tmp_path / "abs"): str(tmp_path / "abs"),
    }
    for value, resolved in expected.items():
        assert load_train_config(path, [f"model.path={json.dumps(value)}"]).model_path() == resolved, value
    toy = load_train_config(CONFIGS / "toy" / "train_shape.yaml")
    assert Path(toy.model_path()).resolve() == TOY_MODEL_DIR.resolve()


def test_bad_values_and_bad_overrides_are_one_line_errors_naming_key_and_file(tmp_path):
    path = tmp_path / "train.yaml"
    at = re.escape(str(path))
    for text, message in [("train:\n  iterations: 1.5\n", "train.iterations must be an integer, got 1.5"),
                          ("anchors:\n  mixup: [1]\n", "anchors.mixup must be true or false, got [1]"),
                          ("anchors:\n  sentences: [a]\n", "anchors.sentences must be a string, got ['a']"),
                          ("train:\n  lr: .inf\n", "train.lr must be a finite number, got inf")]:
        path.write_text("anchors:\n  general_words: g.csv\n" + text)
        with pytest.raises(ConfigError, match=rf"^{at}: {re.escape(message)}$"):
            load_train_config(path)
    path.write_text("anchors:\n  sentences: s.csv\n")
    for override, message in [("train.iterations", "override 'train.iterations' is not of the form key.path=value"),
                              ("train.lr=[1,", "override 'train.lr=[1,': not a YAML value"),
                              ("train.lr=fast", "train.lr must be a number, got 'fast'"),
                              ("train.lr.x=1", "train.lr")]:
        with pytest.raises(ConfigError, match=rf"^{at}: {re.escape(message)}") as error:
            load_train_config(path, [override])
        assert "\n" not in str(error.value)


def test_overrides_merge_through_omegaconf_with_yaml_numbers_and_interpolation(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("anchors:\n  sentences: s.csv\ntrain:\n  pal: 1e4\n  iterations: 1e3\n")  # YAML: strings
    cfg = load_train_config(path, ["train.lr=0.5", "adversarial.lr=${train.lr}", "train.num_stages=2.0"])
    assert (cfg.train.pal, cfg.train.iterations, cfg.train.num_stages) == (1e4, 1000, 2)
    assert isinstance(cfg.train.iterations, int) and cfg.adversarial.lr == cfg.train.lr == 0.5
