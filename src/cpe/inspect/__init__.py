"""The gate inspector: where each eraser's gate fires, from the text side alone (no UNet, seconds on a CPU).

* :mod:`~cpe.inspect.gates`: every eraser's gate on every token of a prompt, the merged winner, a text table;
* :mod:`~cpe.inspect.heatmap`: the same as a PNG (tokens x erasers, padding apart);
* :mod:`~cpe.inspect.leakage`: each eraser's largest gate over prompt sets, split by whether a prompt names its
  concept, on real tokens and on padding (n, median, p95, p99, max), the worst prompts, the training record;
* :mod:`~cpe.inspect.run`: the job of ``inspect_gates.py`` (files written atomically).
"""

from cpe.inspect.gates import PromptGates, TokenGates, format_gate_table, gate_table, token_gates
from cpe.inspect.heatmap import gate_heatmap
from cpe.inspect.leakage import LeakageReport, distribution, leakage

__all__ = ["LeakageReport", "PromptGates", "TokenGates", "distribution", "format_gate_table", "gate_heatmap",
           "gate_table", "leakage", "token_gates"]
