"""An engine of the race in another Python (its own venv), driven over a pipe.

Some peers pin packages the dev venv cannot hold (DeepSparse 1.8.0: onnx < 1.15, numpy < 2), so
the race starts this file with that venv's interpreter::

    .venv-deepsparse/bin/python fdbert/bench/worker.py ADAPTER

and talks to it over stdin / stdout. This file needs only the standard library, NumPy (any version)
and the engine's own package; it times with ``timing.py`` beside it, the loop the race uses for
every other engine, so a remote engine is timed by the same code, in its own process.

The protocol: every message is one JSON line, then the arrays it names in ``"arrays"`` (a list of
names), each as an 8-byte little-endian length and that many bytes of ``.npy`` (``np.save``: read
by any NumPy version, unlike a pickle). Requests and their replies:

    {"cmd": "hello"}                                   -> {"ok": true, "versions": {...}}
    {"cmd": "prepare", "model": PATH, "seq_len": T}    -> {"ok": true, "info": {...}}
    {"cmd": "set_threads", "n": N}                     -> {"ok": true}
    {"cmd": "run"} + input_ids, attention_mask         -> {"ok": true} + out
    {"cmd": "time", "budget_s": s, "min_reps": k} + input_ids, attention_mask
                                                       -> {"ok": true, "samples_s": [...]}
    {"cmd": "quit"}                                    -> (exits)

A request that fails gets ``{"error": "Type: first line of the message"}``; a ``skip`` reply
(``{"skip": reason}``) means the engine cannot run here (its package is missing, or it refuses
this CPU), and the race prints that reason.
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys

try:  # imported by the race (package) or run as a script (this directory is on sys.path)
    from .timing import time_calls
except ImportError:
    from timing import time_calls

import numpy as np

# ---- framing, shared by both ends ---------------------------------------------------------------


def send(stream, header: dict, arrays: dict | None = None) -> None:
    """One message: a JSON line, then each array as <u8 length> + .npy bytes."""
    arrays = arrays or {}
    stream.write((json.dumps({**header, "arrays": list(arrays)}) + "\n").encode())
    for array in arrays.values():
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
        data = buf.getvalue()
        stream.write(struct.pack("<Q", len(data)))
        stream.write(data)
    stream.flush()


def receive(stream) -> tuple[dict, dict]:
    """The next message: (header, {name: array}); EOFError when the other end has gone."""
    line = stream.readline()
    if not line:
        raise EOFError("the other end closed the pipe")
    header = json.loads(line)
    arrays = {}
    for name in header.pop("arrays", []):
        (n,) = struct.unpack("<Q", _read_exactly(stream, 8))
        arrays[name] = np.load(io.BytesIO(_read_exactly(stream, n)), allow_pickle=False)
    return header, arrays


def _read_exactly(stream, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise EOFError(f"expected {n} bytes, got {len(data)}")
    return data


# ---- adapters: what runs in this process --------------------------------------------------------


class Skip(Exception):
    """This engine cannot run here; the message is shown to the user."""


class FakeAdapter:
    """A NumPy stand-in (tests): out[b, t, c] = sin(0.1 id + 0.3 t + c), D = 4."""

    def versions(self) -> dict:
        return {"numpy": np.__version__}

    def prepare(self, model: str, seq_len: int) -> dict:
        if model == "refuse":
            raise Skip("this CPU is not supported (fake)")
        return {"model": model}

    def set_threads(self, n: int) -> None:
        self.threads = n

    def run(self, input_ids, attention_mask):
        pos = np.arange(input_ids.shape[1])[None, :, None]
        ch = np.arange(4)[None, None, :]
        return np.sin(input_ids[..., None] * 0.1 + pos * 0.3 + ch).astype(np.float32)


class DeepSparseAdapter:
    """deepsparse.Engine on an ONNX file: one compiled engine per (B, T, threads), made on first use
    (DeepSparse compiles for static shapes)."""

    def __init__(self):
        try:
            import deepsparse
        except ImportError as exc:
            raise Skip(f"deepsparse does not import: {exc}") from exc
        self.deepsparse = deepsparse
        self.engines: dict = {}
        self.threads = None

    def versions(self) -> dict:
        from importlib.metadata import version
        return {d: version(d) for d in ("deepsparse", "onnx", "numpy")}

    def prepare(self, model: str, seq_len: int) -> dict:
        self.model = model
        if self.threads is None:
            self.threads = 1  # the race times batch 1 at one thread: this compile is reused
        engine = self._engine(1, seq_len)  # compile once here: a refusal of this CPU shows up now
        from deepsparse.cpu import cpu_architecture

        arch = cpu_architecture()
        return {"fraction_of_supported_ops": getattr(engine, "fraction_of_supported_ops", None),
                "isa": getattr(arch, "isa", None) or dict(arch).get("isa")}

    def set_threads(self, n: int) -> None:
        self.threads = n

    def _engine(self, batch: int, seq_len: int):
        key = (batch, seq_len, self.threads)
        if key not in self.engines:
            self.engines[key] = self.deepsparse.Engine(
                self.model, batch_size=batch, num_cores=self.threads,
                input_shapes=[[batch, seq_len], [batch, seq_len]],
            )
        return self.engines[key]

    def run(self, input_ids, attention_mask):
        engine = self._engine(*input_ids.shape)
        return np.asarray(engine.run([input_ids, attention_mask])[0], dtype=np.float32)


ADAPTERS = {"fake": FakeAdapter, "deepsparse": DeepSparseAdapter}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def serve(adapter_name: str, inp, out) -> None:
    """Answer requests until 'quit' or end of input."""
    adapter = None
    try:
        adapter = ADAPTERS[adapter_name]()
    except Skip as exc:
        startup = {"skip": str(exc)}
    except Exception as exc:  # noqa: BLE001 - reported to the race, which skips the engine
        startup = {"skip": _one_line(exc)}
    else:
        startup = None
    while True:
        try:
            header, arrays = receive(inp)
        except EOFError:
            return
        cmd = header.get("cmd")
        if cmd == "quit":
            return
        if startup is not None:
            send(out, startup)
            continue
        try:
            if cmd == "hello":
                send(out, {"ok": True, "versions": adapter.versions()})
            elif cmd == "prepare":
                info = adapter.prepare(header["model"], int(header["seq_len"]))
                send(out, {"ok": True, "info": info or {}})
            elif cmd == "set_threads":
                adapter.set_threads(int(header["n"]))
                send(out, {"ok": True})
            elif cmd == "run":
                result = adapter.run(arrays["input_ids"], arrays["attention_mask"])
                send(out, {"ok": True}, {"out": result})
            elif cmd == "time":
                ids, mask = arrays["input_ids"], arrays["attention_mask"]
                samples = time_calls(lambda: adapter.run(ids, mask), float(header["budget_s"]),
                                     int(header["min_reps"]))
                send(out, {"ok": True, "samples_s": samples})
            else:
                send(out, {"error": f"unknown command {cmd!r}"})
        except Skip as exc:
            send(out, {"skip": str(exc)})
        except Exception as exc:  # noqa: BLE001
            send(out, {"error": _one_line(exc)})


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ADAPTERS:
        print(f"usage: worker.py {{{','.join(ADAPTERS)}}}", file=sys.stderr)
        return 2
    proto_out = os.fdopen(os.dup(1), "wb")  # the protocol keeps the real stdout ...
    os.dup2(2, 1)  # ... and whatever the engine prints (banners, C code) goes to stderr
    sys.stdout = sys.stderr
    serve(argv[0], sys.stdin.buffer, proto_out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
