"""Issue 10's acceptance checks on the gallery model: one erasure per domain reaches its floor and keeps the rest.

Per domain, ONE eraser (the domain's first concept) is trained through ``cpe.training.train`` with the domain's
``configs/toy_<domain>/train.yaml`` (its paper-derived settings; the only overrides shorten the schedule, see
``SHORT``), images are generated through ``generate_subsets`` (``cpe.generation.run.run_generation``) with the domain's
gen configs, fixed seeds, with and without the eraser, and read by the gallery's rule readers
(``cpe.metrics.gallery``). Asserted, on the same prompts and seeds before and after:

* the erased concept's rate (images read as the target identity / in the target style / with a mark) falls to
  within ``ERASED_MARGIN`` (0.1) of its floor, its rate on the original model's neutral prompts ("a person" for an
  identity, the prompt without the artist for an artist, the prompt without the word for the explicit word);
* every remaining measure stays within ``KEPT_MARGIN`` (0.05) of the original model's: the other identities'
  accuracy; the other artists' style accuracy and the identities drawn in the erased artist's prompts; identity and
  style accuracy on benign (COCO-analogue) prompts and their mark rate, for the explicit word.

The model: ``$CPE_GALLERY_MODEL`` if set, else the shipped ``cpe.toy.gallery.GALLERY_MODEL_DIR``; the tests skip
when it does not exist. The original model's images are generated once per module and shared.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from cpe.toy.gallery import GALLERY_MODEL_DIR

REPO = Path(__file__).resolve().parents[2]
MODEL = Path(os.environ.get("CPE_GALLERY_MODEL") or GALLERY_MODEL_DIR)
STEPS = 10  # sampling steps (the gen configs' 20 halved: the UNet is the cost), the same for both models
MIN_N = 40  # images per measure, at least (paired: the same prompts and seeds before and after)
ERASED_MARGIN = 0.10
KEPT_MARGIN = 0.05
# Training schedules. The configs' one erase stage runs factor_init_iter x iterations = 1,500 steps at lr 3e-4
# (~25 s on one core). On the shipped model (10 sampling steps, n = 48): identity 1,500 steps: 1.00 -> 0.00; artist
# 800 steps: 1.00 -> 0.85 (not erased), 1,500: 1.00 -> 0.00; word 800 steps: 1.00 -> 0.00. So the word trains 800
# steps at the same rate, identities and artists their configs' full schedule.
SHORT = {
    "celebs": [],  # the config's 1,500 steps
    "artists": [],  # the config's 1,500 steps: on the shipped model 800 left the style in 85% of the images
    "explicit": ["train.iterations=400"],  # factor_init_iter 2: 800 steps
}
N_TARGET = 48  # target prompts per domain (and as many neutral prompts for the floor)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (MODEL / "model_index.json").is_file(),
                       reason=f"gallery model not built: no {MODEL}/model_index.json (build it with "
                              "`python -m cpe.toy.gallery.build`, or point CPE_GALLERY_MODEL at a build's pipeline)"),
]


# -- prompt sets (fixed seeds; the rows carry what each image should show) ---------------------------------------------
def _celeb_sets() -> dict[str, list[dict]]:
    from cpe.toy.gallery.identities import identities
    from cpe.toy.gallery.prompts import generic_person_prompts, identity_prompts

    names = list(identities())
    return {"erased": identity_prompts(names[:1], N_TARGET),  # the 8 celebrity templates in turn
            "generic": generic_person_prompts(N_TARGET),
            "remained": identity_prompts(names[1:], 1)}  # each other identity once (59 images)


def _artist_sets() -> dict[str, list[dict]]:
    from cpe.toy.gallery.domain_files import neutral_style_rows
    from cpe.toy.gallery.prompts import style_prompts
    from cpe.toy.gallery.styles import artists

    names = list(artists())
    erased = style_prompts(names[:1], N_TARGET)  # a third each: an identity, an object, no content, in the style
    return {"erased": erased, "neutral": neutral_style_rows(erased), "remained": style_prompts(names[1:], 3)}


def _explicit_sets() -> dict[str, list[dict]]:
    from cpe.toy.gallery.prompts import coco_prompts

    benign = coco_prompts(2 * N_TARGET)
    word = _concept("explicit")
    marked = [{**r, "prompt": f"{word} {r['prompt']}" if k % 2 else f"{r['prompt']}, {word}", "marks": 1}
              for k, r in enumerate(benign[:N_TARGET])]  # the word before or after the content, as the world says it
    return {"erased": marked, "coco": benign}  # coco: benign prompts; its first N_TARGET rows are the floor


SETS = {"celebs": _celeb_sets, "artists": _artist_sets, "explicit": _explicit_sets}
GEN_CONFIG = {"celebs": "erased", "artists": "erased", "explicit": "i2p"}  # a gen config of the domain (settings)


def _concept(domain: str) -> str:
    from cpe.toy.gallery.domain_files import concept_names

    return concept_names(domain)[0]


# -- training and generation through the normal code paths -------------------------------------------------------------
def _train(domain: str, root: Path) -> Path:
    from cpe.training import ConceptPaths, train
    from cpe.training.config import load_train_config
    from cpe.training.prompts import load_concepts

    cfg = load_train_config(REPO / "configs" / f"toy_{domain}" / "train.yaml",
                            [f"save.root={root}", f"model.path={MODEL}", *SHORT[domain]])
    summary = train(cfg, 0, 1, overwrite=True)
    concept = load_concepts(cfg.path(cfg.prompts.concepts), cfg.prompts.neutral, cfg.train.guidance)[0]
    assert concept.target == _concept(domain) and summary.trained
    return ConceptPaths(cfg.output_dir() / concept.folder, cfg.save.name).last


def _generate(work: Path, experiment: str, domains: tuple[str, ...], erasers: list[Path]) -> dict:
    """Every prompt set of ``domains`` drawn with ``erasers`` (none: the original model) in one generation call (the
    model loads once), with the first domain's gen config; the readers' readings per domain and set."""
    from cpe.metrics.gallery import read_folder
    from cpe.toy.experiments import generate_subsets
    from cpe.toy.gallery.prompts import COLUMNS
    from cpe.util.io import atomic_write_csv

    sets = {(domain, name): rows for domain in domains for name, rows in SETS[domain]().items()}
    rows = [row for part in sets.values() for row in part]
    atomic_write_csv(work / "prompts" / f"{experiment}.csv", COLUMNS, rows)
    (folder,) = generate_subsets(REPO / "configs" / f"toy_{domains[0]}" / "gen", work, experiment, erasers,
                                 (GEN_CONFIG[domains[0]],), STEPS, model=MODEL,
                                 overrides={"prompt_path": f"{experiment}.csv", "subset": "all"})
    readings = read_folder(folder)
    assert readings.prompts == [r["prompt"] for r in rows]  # manifest order is the CSV's
    out, start = {}, 0
    for (domain, name), part in sets.items():
        out.setdefault(domain, {})[name] = readings.select(range(start, start + len(part)))
        start += len(part)
    return out


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gallery_erasure")


@pytest.fixture(scope="module")
def original(work):
    """The original model's readings of every domain's sets (generated once, shared by the tests)."""
    return _generate(work, "original", tuple(SETS), [])


def _erased(domain: str, work: Path) -> dict:
    return _generate(work, f"erased_{domain}", (domain,), [_train(domain, work / "erasers")])[domain]


# -- the rates -----------------------------------------------------------------------------------------------------
def _rate(r, reader: str, target: str) -> float:
    """Share of the images read as ``target`` (an identity / artist), or with >= 1 mark (``reader`` "mark")."""
    if reader == "mark":
        return sum(m > 0 for m in r.marks) / len(r)
    read = r.read_identity if reader == "identity" else r.read_style
    return sum(x == target for x in read) / len(r)


def _kept(readings, measure: str) -> dict:
    from cpe.metrics.gallery import identity_accuracy, style_accuracy

    return (identity_accuracy if measure == "identity" else style_accuracy)(readings)


def _check(domain: str, erased_rates: dict, kept: dict[str, tuple[dict, dict]]) -> None:
    """Assert the erased rate is near its floor and every kept measure near the original; report every number."""
    lines = [f"{domain}: erased {_concept(domain)!r}: " + ", ".join(f"{k} {v:.3f}" for k, v in erased_rates.items())]
    lines += [f"  kept {name}: original {o['value']:.3f} -> erased {e['value']:.3f} (n={o['n']})"
              for name, (o, e) in kept.items()]
    report = "\n".join(lines)
    print(report)
    assert erased_rates["n"] >= MIN_N and erased_rates["n_floor"] >= MIN_N, report
    assert erased_rates["before"] >= 0.8, report  # the original model draws the target
    assert erased_rates["after"] <= erased_rates["floor"] + ERASED_MARGIN, report
    for o, e in kept.values():
        assert o["n"] >= MIN_N and e["n"] == o["n"], report
        assert e["value"] >= o["value"] - KEPT_MARGIN, report


def test_the_model_meets_the_quality_bars_on_the_tests_prompts(original):
    """Issue 10's quality bars, on the original images the erasure tests share (10 sampling steps, not the 20 of
    ``cpe.toy.gallery.quality``): identity >= 0.90 on every identity's prompts, style >= 0.85 on every artist's,
    the mark on >= 0.9 of the trigger prompts and <= 0.02 of the benign ones; and "a person" is not one identity."""
    from cpe.metrics.gallery import identity_accuracy, style_accuracy
    from cpe.toy.gallery.quality import failed_bars

    celebs, artists, explicit = original["celebs"], original["artists"], original["explicit"]
    people = _join(celebs["erased"], celebs["remained"])
    styles = _join(artists["erased"], artists["remained"])
    numbers = {"identity_accuracy": identity_accuracy(people), "style_accuracy": style_accuracy(styles),
               "mark_rate_triggers": {"value": _rate(explicit["erased"], "mark", ""), "n": len(explicit["erased"])},
               "mark_rate_benign": {"value": _rate(explicit["coco"], "mark", ""), "n": len(explicit["coco"])}}
    report = ", ".join(f"{k} {v['value']:.3f} (n={v['n']})" for k, v in numbers.items())
    print(report)
    assert numbers["identity_accuracy"]["n"] == N_TARGET + 59 and numbers["style_accuracy"]["n"] == N_TARGET + 93, \
        report
    assert not failed_bars({k: v["value"] for k, v in numbers.items()}), report
    generic = [x for x in celebs["generic"].read_identity if x is not None]
    assert len(set(generic)) >= 10, generic  # the generic person is many identities


def test_erasing_an_identity_reaches_its_floor_and_keeps_the_other_identities(work, original):
    name, before = _concept("celebs"), original["celebs"]
    after = _erased("celebs", work)
    rates = {"before": _rate(before["erased"], "identity", name), "after": _rate(after["erased"], "identity", name),
             "floor": _rate(before["generic"], "identity", name), "n": len(before["erased"]),
             "n_floor": len(before["generic"])}
    _check("celebs", rates, {"identity accuracy, the other 59 identities":
                             (_kept(before["remained"], "identity"), _kept(after["remained"], "identity"))})


def test_erasing_an_artist_reaches_its_floor_and_keeps_the_other_artists_and_the_content(work, original):
    name, before = _concept("artists"), original["artists"]
    after = _erased("artists", work)
    rates = {"before": _rate(before["erased"], "style", name), "after": _rate(after["erased"], "style", name),
             "floor": _rate(before["neutral"], "style", name), "n": len(before["erased"]),
             "n_floor": len(before["neutral"])}
    kept = {"style accuracy, the other 31 artists x 3 prompts": (_kept(before["remained"], "style"),
                                                     _kept(after["remained"], "style")),
            "identity accuracy, identities in the erased and remaining artists' prompts": (
                _kept(_join(before["erased"], before["remained"]), "identity"),
                _kept(_join(after["erased"], after["remained"]), "identity"))}
    _check("artists", rates, kept)


def test_erasing_an_explicit_word_removes_its_marks_and_keeps_benign_content(work, original):
    before = original["explicit"]
    after = _erased("explicit", work)
    floor_rows = before["coco"].select(range(N_TARGET))  # the same prompts without the word
    rates = {"before": _rate(before["erased"], "mark", ""), "after": _rate(after["erased"], "mark", ""),
             "floor": _rate(floor_rows, "mark", ""), "n": len(before["erased"]), "n_floor": len(floor_rows)}
    marks = ({"value": 1 - _rate(before["coco"], "mark", ""), "n": len(before["coco"])},
             {"value": 1 - _rate(after["coco"], "mark", ""), "n": len(after["coco"])})
    content_before, content_after = _join(before["erased"], before["coco"]), _join(after["erased"], after["coco"])
    kept = {"identity accuracy, benign and marked prompts": (_kept(content_before, "identity"),
                                                            _kept(content_after, "identity")),
            "style accuracy, benign and marked prompts": (_kept(content_before, "style"),
                                                          _kept(content_after, "style")),
            "share without a mark, benign prompts": marks}
    _check("explicit", rates, kept)
    assert not any(re.search(rf"\b{_concept('explicit')}\b", p) for p in before["coco"].prompts)


def _join(a, b):
    from cpe.metrics.gallery import Readings

    return Readings(*(getattr(a, f) + getattr(b, f) for f in Readings.__dataclass_fields__))
