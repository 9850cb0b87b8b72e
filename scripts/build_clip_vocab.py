"""Write the CLIP BPE tokenizer files (vocab.json, merges.txt) from open_clip's vocabulary.

The project ships the output under ``src/cpe/assets/clip_tokenizer``; this script documents how
it was made. Get the input with ``pip download --no-deps open_clip_torch`` and unzip
``open_clip/bpe_simple_vocab_16e6.txt.gz`` from the wheel.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path


def bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable unicode table of GPT-2/CLIP byte-level BPE."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def build(bpe_gz: Path, out_dir: Path) -> None:
    lines = gzip.open(bpe_gz).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bpe_gz", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    build(args.bpe_gz, args.out_dir)
