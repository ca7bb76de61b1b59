/* attention_pairs.h -- internal to attention.c and attention_int8.c: the (sequence, head) pairs of a
 * packed batch (attention.h), the OpenMP work items of both attentions.
 *
 * reference: fdbert/reference/attention.py, fdbert/reference/attention_int8.py · tests: spec_tests/test_native_attention.py, spec_tests/test_attention_int8.py
 */
#ifndef FDBERT_ATTENTION_PAIRS_H
#define FDBERT_ATTENTION_PAIRS_H

#include <stddef.h>
#include <stdint.h>

#include "attention.h"

/* Keys query i (0-based within its sequence) may see: all Lk, or j <= i + Lk - Lq when causal. */
static inline int64_t visible_keys(int64_t i, int64_t Lq, int64_t Lk, int causal)
{
    if (!causal) return Lk;
    int64_t lim = i + Lk - Lq + 1;
    return lim < Lk ? lim : Lk;
}

/* FP_ENOKEYS if a query would see no key (Lk = 0 < Lq, or causal with Lk < Lq), FP_ETOOLONG if a
 * sequence with queries has more than max_keys keys; else FP_OK with the longest Lq and Lk. */
static inline int scan_pairs(const int32_t *cu_q, const int32_t *cu_k, int64_t B, int causal,
                             int64_t max_keys, int64_t *lq_max, int64_t *lk_max)
{
    *lq_max = *lk_max = 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t Lq = cu_q[b + 1] - cu_q[b], Lk = cu_k[b + 1] - cu_k[b];
        if (Lq > 0 && (Lk == 0 || (causal && Lk < Lq))) return FP_ENOKEYS;
        if (Lq > 0 && Lk > max_keys) return FP_ETOOLONG;
        *lq_max = Lq > *lq_max ? Lq : *lq_max;
        *lk_max = Lk > *lk_max ? Lk : *lk_max;
    }
    return FP_OK;
}

/* One work item: the first rows of its sequence and head in q, k, v and the output, Lq and Lk. */
typedef struct {
    const float *q, *k, *v;
    float *out;
    uint8_t *outq;
    int64_t Lq, Lk;
} attn_pair;

/* Work item task = b * H + h: the first row of head h of sequence b in q and the output (out or
 * outq, the other NULL), of its kv head h / G in k and v (grouped-query attention: G query heads
 * share a kv head; G = 1 when every head has its own), and the sequence's Lq and Lk. */
static inline attn_pair pair_at_gqa(int64_t task, int64_t H, int64_t G, int64_t Dh, const int32_t *cu_q,
                                    const int32_t *cu_k, const float *q, const float *k, const float *v,
                                    const int64_t rs[4], float *out, uint8_t *outq)
{
    const int64_t b = task / H, h = task % H, q0 = cu_q[b], k0 = cu_k[b], hk = h / G;
    attn_pair p = {q + q0 * rs[0] + h * Dh, k + k0 * rs[1] + hk * Dh, v + k0 * rs[2] + hk * Dh,
                   outq ? NULL : out + q0 * rs[3] + h * Dh, outq ? outq + q0 * rs[3] + h * Dh : NULL,
                   cu_q[b + 1] - q0, cu_k[b + 1] - k0};
    return p;
}

static inline attn_pair pair_at(int64_t task, int64_t H, int64_t Dh, const int32_t *cu_q,
                                const int32_t *cu_k, const float *q, const float *k, const float *v,
                                const int64_t rs[4], float *out, uint8_t *outq)
{
    return pair_at_gqa(task, H, 1, Dh, cu_q, cu_k, q, k, v, rs, out, outq);
}

#endif /* FDBERT_ATTENTION_PAIRS_H */
