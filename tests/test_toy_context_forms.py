"""benchmarks/toy_context_gates.py's image table: every prompt form of red and circle has 20 images, each beside
the same form with the neutral word, and the intended attributes say what the readers must find."""

from __future__ import annotations

from collections import Counter


def test_every_form_has_its_neutral_twin(load_benchmark):
    bench = load_benchmark("toy_context_gates")
    for target, neutral_word in (("red", "colorful"), ("circle", "shape")):
        rows = bench.form_rows(target)
        assert set(Counter((r["form"], r["neutral"]) for r in rows).values()) == {20}
        assert {r["form"] for r in rows} == {label for label, _ in bench.FORMS}
        for form in {r["form"] for r in rows}:
            named = sorted((r["prompt"], r["evaluation_seed"]) for r in rows if r["form"] == form and not r["neutral"])
            twins = sorted((r["prompt"], r["evaluation_seed"]) for r in rows if r["form"] == form and r["neutral"])
            assert [(p.replace(target, neutral_word), s) for p, s in named] == twins or form == "bare word"
        by_form = {r["form"]: r for r in rows if not r["neutral"]}
        assert by_form["bare word"]["prompt"] == target and by_form["bare word"]["colour"] == ""
        assert by_form["+3 words before"]["prompt"].startswith("a a a a ")
        assert by_form["swapped order"]["prompt"].split()[1] in ("circle", "square", "triangle", "cross")
    red = bench.form_rows("red")
    assert all(r["colour"] == ("" if r["neutral"] or r["form"] == "bare word" else "red") for r in red)
    assert all(r["shape"] in ("circle", "square", "triangle", "cross") for r in red if r["form"] != "bare word")
