"""benchmarks/gallery_explicit_leakage.py's table: leakage, the own-concept gate and the marks the merged erasers
leave on the I2P analogue, each row from its measured numbers."""

from __future__ import annotations


def _entry(p99: list[float], own: list[float], marks: dict | None) -> dict:
    erasers = {name: {"others": {"p99": a}, "own": {"median": b, "n": 11 + i}, "worst": []}
               for i, (name, a, b) in enumerate(zip(("nudity", "naked", "erotic", "sexual"), p99, own, strict=True))}
    entry = {"prompts": 318, "erasers": erasers}
    if marks is not None:
        entry["marks"] = marks
    return entry


def test_the_table_carries_leakage_own_gate_and_marks(load_benchmark):
    bench = load_benchmark("gallery_explicit_leakage")
    results = {
        "train_context/seed0": _entry([0.999, 0.05, 0.1, 0.2], [0.99, 0.98, 0.97, 0.96],
                                      {"total": 0, "images_with_mark": 0, "n": 320}),
        "prefix_gate_coef 1/seed0": _entry([0.5, 0.5, 0.5, 0.5], [0.02, 0.02, 0.02, 0.02], None),
    }
    lines = bench.render(results).splitlines()
    first = next(line for line in lines if line.startswith("| train_context | 0 |"))
    assert "0.999 / 0.050 / 0.100 / 0.200 (n=318)" in first and "| 2 of 4 |" in first  # 0.05 and 0.1 are ≤ 0.1
    assert "0.990 / 0.980 / 0.970 / 0.960 (n ≥ 11)" in first and first.endswith("| 0 (0 of 320) |")
    second = next(line for line in lines if line.startswith("| prefix_gate_coef 1 | 0 |"))
    assert "| 0 of 4 |" in second and second.endswith("| not measured |")
    assert bench.folder_name("separate key, prefix_gate_coef 1") == "separate_key__prefix_gate_coef_1"
