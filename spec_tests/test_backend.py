"""Backend selection and dispatch (fdbert.backend): set_backend as statement and context manager,
thread and asyncio-task isolation, the registry, mock backends, fallback and ``only=True``, and the
FDBERT_BACKEND / FDBERT_PURE_PYTHON environment variables (in subprocesses: they are read at import).

Backends registered here get unique names and are removed afterwards, so other tests never see them.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import threading
from pathlib import Path

import numpy as np
import pytest

import fdbert
from fdbert import backend, ops, reference
import subproc
from strategies import SmallConfig, random_encoder

REPO_ROOT = Path(__file__).resolve().parent.parent
_names = itertools.count()


class RecordingGelu:
    """A backend implementing one op, gelu, by calling the reference and recording each call."""

    def __init__(self, result=None):
        self.calls = []
        self.result = result  # None: the reference's value; a callable: a wrong value, to see it used

    def gelu(self, x):
        self.calls.append(x.shape)
        return reference.gelu(x) if self.result is None else self.result(x)


class DecliningGelu:
    def __init__(self, how):
        self.how, self.calls = how, 0

    def gelu(self, x):
        self.calls += 1
        if self.how == "raise":
            raise backend.Declined("inputs of this shape are not supported by the mock")
        return NotImplemented


@pytest.fixture
def register():
    """register(namespace=..., loader=...) -> a fresh backend name; unregistered at teardown."""
    added = []

    def _register(namespace=None, *, loader=None):
        name = f"mock{next(_names)}"
        fdbert.register_backend(name, namespace, loader=loader)
        added.append(name)
        return name

    yield _register
    for name in added:
        fdbert.unregister_backend(name)


@pytest.fixture(scope="module")
def model():
    return random_encoder(SmallConfig("bert", 2, 2, 4, 12, 30, 10, 2, 1e-12, seed=4))


IDS = np.array([[1, 2, 3, 4, 5, 6], [7, 8, 9, 0, 0, 0]])
MASK = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])


def in_fresh_context(fn, *args):
    """Run fn in a copy of the current context, so a statement-form set_backend cannot leak out."""
    return contextvars.copy_context().run(fn, *args)


# ---- set_backend: statement and context manager --------------------------------------------------
def test_set_backend_as_a_statement(register):
    name = register(RecordingGelu())
    before = fdbert.get_backend()

    def body():
        ctx = fdbert.set_backend(name)
        assert ctx.name == name and name in repr(ctx)
        assert fdbert.get_backend() == name
        assert backend.backend_chain() == [name, "reference"]
        return fdbert.get_backend()

    assert in_fresh_context(body) == name
    assert fdbert.get_backend() == before


def test_set_backend_as_a_context_manager_restores_even_on_exceptions(register):
    a, b = register(RecordingGelu()), register(RecordingGelu())
    before = fdbert.get_backend()
    with fdbert.set_backend(a):
        assert fdbert.get_backend() == a
        with pytest.raises(KeyError):
            with fdbert.set_backend(b, only=True):
                assert fdbert.get_backend() == b and backend.backend_chain() == [b]
                raise KeyError("boom")
        assert fdbert.get_backend() == a and backend.backend_chain() == [a, "reference"]
    assert fdbert.get_backend() == before


def test_backend_names_are_case_insensitive():
    with fdbert.set_backend(" Reference "):
        assert fdbert.get_backend() == "reference"


def test_auto_means_native_when_available_else_reference():
    native_ok = fdbert.available_backends()["native"] is None
    with fdbert.set_backend("auto") as ctx:
        assert ctx.name == fdbert.get_backend() == ("native" if native_ok else "reference")


# ---- isolation -----------------------------------------------------------------------------------
def test_threads_do_not_see_each_others_choice(register):
    mine, theirs = register(RecordingGelu()), register(RecordingGelu())
    default = fdbert.get_backend()
    seen = {}
    chosen, checked = threading.Event(), threading.Event()

    def worker():
        seen["at start"] = fdbert.get_backend()  # the main thread's `with` is not inherited
        fdbert.set_backend(theirs)                # statement form, inside this thread only
        chosen.set()
        checked.wait(5)
        seen["at end"] = fdbert.get_backend()

    with fdbert.set_backend(mine):
        t = threading.Thread(target=worker)
        t.start()
        assert chosen.wait(5)
        assert fdbert.get_backend() == mine  # the worker's statement did not reach us
        checked.set()
        t.join(5)
    assert seen == {"at start": default, "at end": theirs}
    assert fdbert.get_backend() == default


def test_asyncio_tasks_do_not_see_each_others_choice(register):
    names = [register(RecordingGelu()) for _ in range(3)]

    async def task(name, gate):
        fdbert.set_backend(name)  # statement form: each task runs in its own context copy
        await gate.wait()         # every task has chosen before any checks
        await asyncio.sleep(0)
        return fdbert.get_backend()

    async def main():
        gate = asyncio.Event()
        tasks = [asyncio.create_task(task(n, gate)) for n in names]
        await asyncio.sleep(0)
        gate.set()
        got = await asyncio.gather(*tasks)
        return got, fdbert.get_backend()

    before = fdbert.get_backend()
    got, in_main = asyncio.run(main())
    assert got == names
    assert in_main == before == fdbert.get_backend()


# ---- the registry --------------------------------------------------------------------------------
def test_unknown_backend_name_is_a_value_error_listing_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown backend 'cuda'") as e:
        fdbert.set_backend("cuda")
    assert isinstance(e.value, fdbert.BackendError)
    for known in ("auto", "native", "reference"):
        assert known in str(e.value)


def test_available_backends_maps_names_to_none_or_a_reason(register):
    def loader():
        raise ImportError("needs a frobnicator, which this machine lacks")

    broken, fine = register(loader=loader), register(RecordingGelu())
    av = fdbert.available_backends()
    assert av["reference"] is None and av[fine] is None
    assert av[broken] == "needs a frobnicator, which this machine lacks"
    assert av["native"] is None or (isinstance(av["native"], str) and av["native"])
    with pytest.raises(fdbert.BackendError, match=rf"backend '{broken}' is unavailable: needs a frobnicator"):
        fdbert.set_backend(broken)


def test_auto_is_reserved():
    with pytest.raises(fdbert.BackendError, match="reserved"):
        fdbert.register_backend("auto", RecordingGelu())


# ---- dispatch: a mock backend implementing one op ------------------------------------------------
def test_a_mock_backend_runs_its_op_and_the_reference_runs_the_rest(register, model):
    mock = RecordingGelu()
    name = register(mock)
    with fdbert.set_backend("reference", only=True):
        want = model(IDS, MASK)
    with fdbert.set_backend(name):
        assert backend.resolve("gelu") == name and backend.resolve("linear") == "reference"
        got = model(IDS, MASK)
    # one FFN GELU per layer, on the packed [n, F] hidden activations (n = 9 real tokens)
    assert mock.calls == [(9, 12)] * 2
    np.testing.assert_array_equal(got, want)


def test_the_mock_result_is_really_used(register, model):
    """If the dispatcher ignored the mock's return value, the test above would still pass."""
    name = register(RecordingGelu(result=lambda x: np.zeros_like(x)))
    with fdbert.set_backend("reference", only=True):
        want = model(IDS, MASK)
    with fdbert.set_backend(name):
        got = model(IDS, MASK)
    assert np.abs(got - want).max() > 1e-2


@pytest.mark.parametrize("how", ["return NotImplemented", "raise"])
def test_a_declining_op_falls_back_to_the_reference(register, model, how):
    mock = DecliningGelu(how)
    name = register(mock)
    with fdbert.set_backend("reference", only=True):
        want = model(IDS, MASK)
    with fdbert.set_backend(name):
        got = model(IDS, MASK)
    assert mock.calls == 2
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("how, why", [("return NotImplemented", "declined"),
                                      ("raise", "declined (inputs of this shape are not supported")])
def test_only_true_turns_a_decline_into_an_error_naming_every_backend_tried(register, how, why):
    name = register(DecliningGelu(how))
    x = np.linspace(-3, 3, 8, dtype=np.float32)
    with fdbert.set_backend(name, only=True):
        with pytest.raises(fdbert.BackendError, match="no backend could run op 'gelu'") as e:
            ops.gelu(x)
    assert f"{name}: {why}" in str(e.value)
    assert "reference" not in str(e.value)  # only=True: the reference was not tried


def test_only_true_with_a_missing_op_is_an_error(register, model):
    name = register(RecordingGelu())
    with fdbert.set_backend(name, only=True):
        # embedding is the first op a forward pass runs
        with pytest.raises(fdbert.BackendError, match=rf"tried {name}: has no op 'embedding'$"):
            model(IDS, MASK)


def test_without_only_every_decline_is_listed_when_the_chain_fails(register):
    """The chain is [selected, reference]; make an op neither has, to see both reasons listed."""
    name = register(RecordingGelu())
    with fdbert.set_backend(name):
        with pytest.raises(fdbert.BackendError) as e:
            backend.call("no_such_op", 1)
    assert f"{name}: has no op 'no_such_op'" in str(e.value)
    assert "reference: has no op 'no_such_op'" in str(e.value)


# ---- environment variables (read at import: subprocesses) ----------------------------------------
def run_python(code, **env):
    """Run `code` in a fresh interpreter with `env` added; assert it succeeded; return its stdout."""
    r = subproc.run_python(code, **env)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_fdbert_backend_env_var_chooses_the_default():
    assert run_python("import fdbert; print(fdbert.get_backend())", FDBERT_BACKEND="reference") == "reference"
    # a backend registered after import can be the env default: the name is checked when first used
    out = run_python("""
        import fdbert, threading
        class Mock:
            pass
        fdbert.register_backend("mymock", Mock())
        seen = []
        t = threading.Thread(target=lambda: seen.append(fdbert.get_backend()))
        t.start(); t.join()
        print(fdbert.get_backend(), seen[0])
        """, FDBERT_BACKEND="MyMock")
    assert out == "mymock mymock"


def test_fdbert_backend_env_var_auto_and_unset():
    code = "import fdbert; print(fdbert.get_backend(), fdbert.available_backends()['native'] is None)"
    for env in ({}, {"FDBERT_BACKEND": "auto"}):
        name, native_ok = run_python(code, **env).split()
        assert name == ("native" if native_ok == "True" else "reference")


def test_fdbert_backend_env_var_with_an_unknown_name_fails_when_used():
    out = run_python("""
        import fdbert
        try:
            fdbert.get_backend()
        except ValueError as e:
            print(type(e).__name__, e)
        """, FDBERT_BACKEND="gpu")
    assert out.startswith("BackendError unknown backend 'gpu'")


def test_set_default_backend_changes_threads_that_never_chose():
    out = run_python("""
        import fdbert, threading
        fdbert.set_default_backend("reference")
        seen = []
        t = threading.Thread(target=lambda: seen.append(fdbert.get_backend()))
        t.start(); t.join()
        print(fdbert.get_backend(), seen[0])
        try:
            fdbert.set_default_backend("tpu")
        except fdbert.BackendError as e:
            print("unknown backend 'tpu'" in str(e))
        """, FDBERT_BACKEND="auto")
    assert out.split() == ["reference", "reference", "True"]


def test_fdbert_pure_python_makes_native_unavailable_with_a_reason():
    out = run_python("""
        import fdbert
        reason = fdbert.available_backends()["native"]
        print(repr(reason))
        print(fdbert.get_backend())
        try:
            fdbert.set_backend("native")
        except fdbert.BackendError as e:
            print("refused:", e)
        """, FDBERT_PURE_PYTHON="1")
    reason, default, refused = out.splitlines()
    assert "FDBERT_PURE_PYTHON" in reason
    assert default == "reference"
    assert refused.startswith("refused: backend 'native' is unavailable") and "FDBERT_PURE_PYTHON" in refused


def test_unregister_backend_removes_it_and_guards_builtins():
    fdbert.register_backend("to-remove", object())
    assert "to-remove" in fdbert.available_backends()
    fdbert.unregister_backend("to-remove")
    assert "to-remove" not in fdbert.available_backends()
    with pytest.raises(fdbert.BackendError, match="no backend named"):
        fdbert.unregister_backend("to-remove")
    with pytest.raises(fdbert.BackendError, match="cannot be unregistered"):
        fdbert.unregister_backend("reference")
