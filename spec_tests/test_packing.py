"""Packed variable-length batches (EET): padding never changes a sequence's output.

Torch-free: the models here are fdbert Encoders with random NumPy weights (strategies.random_encoder);
the oracle for a sequence in a batch is the same sequence run alone, unpadded.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import fdbert
from fdbert.packing import pack, pack_sequences, pass_groups, unpack
from fdbert.blocks import heads
from strategies import PADDING_SIDES, mask_for, padded_batches, random_encoder, small_configs
from tolerances import PACKING_ATOL, PACKING_FP32_ATOL, FP32_MIN_D


def expected_cu_seqlens(mask):  # [B, T] -> [B+1], written independently of fdbert
    out = [0]
    for row in np.asarray(mask):
        out.append(out[-1] + int(sum(row)))
    return out


# ---- every sequence of a batch == the sequence alone ---------------------------------------------
# float64 separates packing from BLAS summation order (tolerances.PACKING_ATOL vs PACKING_FP32_ATOL).
@pytest.mark.parametrize("dtype, atol", [(np.float64, PACKING_ATOL), (np.float32, PACKING_FP32_ATOL)],
                         ids=["float64", "float32"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_each_sequence_in_a_batch_equals_it_alone(dtype, atol, data):
    configs = small_configs() if dtype == np.float64 else \
        small_configs().filter(lambda c: c.d_model >= FP32_MIN_D)
    cfg = data.draw(configs, label="config")
    batch = data.draw(padded_batches(cfg.vocab_size, cfg.max_positions, cfg.type_vocab_size,
                                     max_batch=5, max_extra_padding=8), label="batch")
    model = random_encoder(cfg, dtype)
    bert = cfg.model_type == "bert"
    with fdbert.set_backend("reference", only=True):
        out = model(batch.input_ids, batch.attention_mask, batch.token_type_ids if bert else None)
        assert out.shape == (*batch.input_ids.shape, cfg.d_model) and out.dtype == dtype
        for b in range(len(batch.lengths)):
            ids, tt = batch.sequence(b)
            alone = model(ids[None, :], None, tt[None, :] if bert else None)[0]  # [L, D]
            inside = out[b][batch.attention_mask[b].astype(bool)]                  # [L, D]
            np.testing.assert_allclose(inside, alone, rtol=0, atol=atol,
                                       err_msg=f"sequence {b} ({batch.side} padding)")
    assert np.all(out[~batch.attention_mask.astype(bool)] == 0), "padding positions must hold 0"


@settings(max_examples=30, deadline=None)
@given(cfg=small_configs(), side=st.sampled_from(PADDING_SIDES), extra=st.integers(0, 10))
def test_padding_side_and_amount_do_not_matter(cfg, side, extra):
    """One sequence, padded by `extra` columns on `side`: real-token outputs equal the unpadded ones."""
    model = random_encoder(cfg, np.float64)
    rng = np.random.default_rng(cfg.seed)
    L = int(rng.integers(1, cfg.max_positions + 1))
    ids = rng.integers(0, cfg.vocab_size, size=(1, L + extra))
    mask = mask_for([L], L + extra, side)
    real = mask[0].astype(bool)
    padded = model(ids, mask)[0][real]
    alone = model(ids[:, real])[0]
    np.testing.assert_allclose(padded, alone, rtol=0, atol=PACKING_ATOL)


def test_padding_tokens_are_invisible():
    """Changing the ids under the padding changes nothing (in HF it would, without the mask)."""
    from strategies import SmallConfig
    model = random_encoder(SmallConfig("bert", 2, 2, 4, 8, 30, 12, 2, 1e-12, seed=5))
    ids = np.arange(12).reshape(1, 12) % 30
    mask = mask_for([5], 12, "left")
    a = model(ids, mask)
    b = model(np.where(mask == 1, ids, 29), mask, np.where(mask == 1, 0, 1))
    np.testing.assert_array_equal(a, b)


# ---- pack / unpack -------------------------------------------------------------------------------
@given(batch=padded_batches(vocab_size=1000, max_len=20, type_vocab_size=2, min_length=0, max_batch=6,
                            max_extra_padding=5))
@example(batch=None)  # replaced below by the all-empty batch
def test_pack_layout(batch):
    if batch is None:  # every row empty
        from strategies import PaddedBatch
        batch = PaddedBatch(np.ones((3, 4), np.int64), np.zeros((3, 4), np.int64),
                            np.zeros((3, 4), np.int64), (0, 0, 0), "right")
    ids, mask, tt = batch.input_ids, batch.attention_mask, batch.token_type_ids
    p = pack(ids, mask, tt)
    assert p.cu_seqlens.dtype == np.int32
    assert p.cu_seqlens.tolist() == expected_cu_seqlens(mask)
    assert p.lengths.tolist() == list(batch.lengths)
    assert p.n_tokens == sum(batch.lengths)
    # tokens back to back, sequence by sequence, in order; positions restart at 0 per sequence
    want_ids, want_tt, want_pos = [], [], []
    for b in range(len(batch.lengths)):
        seq_ids, seq_tt = batch.sequence(b)
        want_ids += seq_ids.tolist()
        want_tt += seq_tt.tolist()
        want_pos += list(range(len(seq_ids)))
    assert p.input_ids.tolist() == want_ids
    assert p.token_type_ids.tolist() == want_tt
    assert p.positions.tolist() == want_pos
    assert p.padded_shape == ids.shape
    # round trip: unpack(pack(x)) restores real slots and fills padding
    assert np.array_equal(unpack(p.input_ids, p, fill=-1), np.where(mask == 1, ids, -1))
    feats = np.random.default_rng(0).standard_normal((p.n_tokens, 3)).astype(np.float32)  # [n, 3]
    back = unpack(feats, p)  # [B, T, 3]
    assert back.dtype == np.float32 and back.shape == (*ids.shape, 3)
    assert np.array_equal(back[mask.astype(bool)], feats)
    assert np.all(back[~mask.astype(bool)] == 0)


@given(lengths=st.lists(st.integers(0, 12), min_size=0, max_size=6))
def test_pack_sequences_matches_right_padded_pack(lengths):
    rng = np.random.default_rng(len(lengths))
    seqs = [rng.integers(0, 100, n).tolist() for n in lengths]
    p = pack_sequences(seqs)
    assert p.cu_seqlens.tolist() == [0, *np.cumsum(lengths, dtype=int).tolist()]
    assert p.input_ids.tolist() == [t for s in seqs for t in s]
    assert p.positions.tolist() == [i for s in seqs for i in range(len(s))]
    if lengths:
        T = max(lengths)
        ids = np.array([s + [0] * (T - len(s)) for s in seqs], dtype=np.int64).reshape(len(seqs), T)
        q = pack(ids, mask_for(lengths, T, "right"))
        for field in ("input_ids", "positions", "cu_seqlens", "rows", "cols"):
            assert getattr(p, field).tolist() == getattr(q, field).tolist(), field
        assert p.padded_shape == q.padded_shape


def test_bool_and_integer_masks_agree():
    ids = np.arange(10).reshape(2, 5)
    mask = mask_for([3, 5], 5, "left")
    a, b = pack(ids, mask), pack(ids, mask.astype(bool))
    assert a.input_ids.tolist() == b.input_ids.tolist() and a.cu_seqlens.tolist() == b.cu_seqlens.tolist()


# ---- empty sequences -----------------------------------------------------------------------------
@pytest.mark.parametrize("side", PADDING_SIDES)
def test_empty_sequences_give_zeros_and_leave_others_alone(side):
    from strategies import SmallConfig
    model = random_encoder(SmallConfig("distilbert", 2, 2, 4, 16, 40, 10, 0, 1e-12, seed=11), np.float64)
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 40, size=(4, 10))
    lengths = [0, 7, 0, 10]
    mask = mask_for(lengths, 10, side)
    out = model(ids, mask)
    assert np.all(out[0] == 0) and np.all(out[2] == 0)
    for b in (1, 3):
        real = mask[b].astype(bool)
        np.testing.assert_allclose(out[b][real], model(ids[b:b + 1, real])[0], rtol=0, atol=PACKING_ATOL)
    p = pack(ids, mask)
    assert p.cu_seqlens.tolist() == [0, 0, 7, 7, 17]
    pooled = heads.mean_pool(model.forward_packed(p), p.cu_seqlens)  # [B, D]
    assert np.all(pooled[[0, 2]] == 0)
    np.testing.assert_allclose(pooled[1], out[1][mask[1].astype(bool)].mean(axis=0), rtol=0, atol=PACKING_ATOL)


def test_all_empty_batch():
    from strategies import SmallConfig
    model = random_encoder(SmallConfig("bert", 1, 1, 4, 8, 20, 8, 2, 1e-12, seed=2))
    out = model(np.ones((3, 5), np.int64), np.zeros((3, 5), np.int64))
    assert out.shape == (3, 5, 4) and np.all(out == 0)


# ---- malformed masks -----------------------------------------------------------------------------
@given(T=st.integers(3, 16), data=st.data())
def test_a_mask_with_holes_is_rejected(T, data):
    """A row with a 0 between two 1s is neither left nor right padding."""
    a = data.draw(st.integers(0, T - 3), label="first one")
    hole = data.draw(st.integers(a + 1, T - 2), label="hole")
    c = data.draw(st.integers(hole + 1, T - 1), label="second one")
    B = data.draw(st.integers(1, 4), label="B")
    row = data.draw(st.integers(0, B - 1), label="bad row")
    mask = np.ones((B, T), np.int64)
    mask[row] = 0
    mask[row, a:hole] = 1
    mask[row, c] = 1
    with pytest.raises(fdbert.ShapeError, match=rf"row {row} has holes"):
        pack(np.zeros((B, T), np.int64), mask)


def test_mask_values_other_than_0_1_are_rejected():
    with pytest.raises(fdbert.ShapeError, match="only 0 and 1.*2"):
        pack(np.zeros((1, 3), np.int64), np.array([[1, 2, 1]]))


@pytest.mark.parametrize("shape", [(0, 5), (2, 0)], ids=["no sequences", "no columns"])
def test_degenerate_batch_shapes(shape):
    from strategies import SmallConfig
    model = random_encoder(SmallConfig("bert", 1, 2, 2, 4, 10, 8, 2, 1e-12, seed=0))
    out = model(np.zeros(shape, np.int64))
    assert out.shape == (*shape, 4)
    p = pack(np.zeros(shape, np.int64))
    assert p.n_tokens == 0 and p.cu_seqlens.tolist() == [0] * (shape[0] + 1)


def test_python_lists_and_other_integer_dtypes_are_accepted():
    from strategies import SmallConfig
    model = random_encoder(SmallConfig("distilbert", 1, 2, 2, 4, 10, 8, 0, 1e-12, seed=0))
    want = model(np.array([[1, 2, 3]], np.int64), np.array([[1, 1, 0]]))
    np.testing.assert_array_equal(model([[1, 2, 3]], [[1, 1, 0]]), want)
    for dtype in (np.int32, np.uint8, np.uint64):
        np.testing.assert_array_equal(model(np.array([[1, 2, 3]], dtype), np.array([[1, 1, 0]], bool)), want)


# ---- long batches run as several passes --------------------------------------------------------------
@given(lengths=st.lists(st.integers(0, 40), max_size=12), max_tokens=st.integers(1, 100))
def test_pass_groups_cover_the_batch_greedily(lengths, max_tokens):
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    groups = pass_groups(cu, max_tokens)
    assert [i for i, _ in groups] == [0] * bool(groups) + [j for _, j in groups[:-1]]   # consecutive
    assert (groups[-1][1] if groups else 0) == len(lengths)               # every sequence, once
    for i, j in groups:
        tokens = int(cu[j] - cu[i])
        assert j > i and (tokens <= max_tokens or j == i + 1)               # a long sequence alone
        if j < len(lengths):                                              # greedy: the next one did not fit
            assert cu[j + 1] - cu[i] > max_tokens
    assert pass_groups(cu, None) == ([(0, len(lengths))] if lengths else [])


@pytest.mark.parametrize("max_tokens", [1, 7, 30, None])
def test_a_batch_split_into_passes_gives_the_same_rows(max_tokens):
    """Encoder.max_tokens_per_pass only changes how many sequences run together: float64
    reference results equal one pass within the packing tolerance."""
    from strategies import SmallConfig
    model = random_encoder(SmallConfig("bert", 2, 2, 4, 8, 50, 32, 2, 1e-12, seed=3), np.float64)
    rng = np.random.default_rng(4)
    batch = pack_sequences([rng.integers(0, 50, n).tolist() for n in (5, 0, 12, 3, 9, 1)])
    with fdbert.set_backend("reference", only=True):
        model.max_tokens_per_pass = None
        whole = model.forward_packed(batch)
        model.max_tokens_per_pass = max_tokens
        split = model.forward_packed(batch)
    assert split.shape == whole.shape
    np.testing.assert_allclose(split, whole, rtol=0, atol=PACKING_ATOL)
