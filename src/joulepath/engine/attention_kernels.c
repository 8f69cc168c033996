/* Row-invariant attention over a paged KV cache (fp32, CPU), for joulepath's engine (engine/row_attention.py).
 *
 * Every query row is computed on its own, over exactly its visible keys, in one fixed order: scores key by key
 * (a dot product with 16 lane partials summed in a fixed tree), the row maximum, exponentials by one
 * polynomial (Cephes' expf, branch-free), their sum in 16 lane partials, then the values weighted key by key.
 * The arithmetic is written with GCC/Clang vector extensions (16-float vectors, exponentials included, so no
 * element takes a scalar path whose split would depend on a buffer's length or alignment) and compiled with
 * -ffp-contract=off (no fused multiply-adds), so every build performs the same operations in the same order
 * whatever vector width the compiler lowers them to.
 * Nothing depends on the other rows of the call, on padding, or on how a sequence's tokens were split into
 * steps, so a token's attention output is bitwise the same whether it was decoded alone, verified among
 * drafts, computed in a batch of other sequences or in a prefill chunk of any size. That is what makes greedy
 * speculative decoding token-identical to plain decoding when the weight GEMMs are row-invariant too (the
 * int8/int4 VNNI kernels are: integer sums, per-row scales).
 *
 * Layout: q and out are (T, H, D) row-major; the layer's cache k and v are (S, KV, D) with S slots; row r reads
 * keys at positions [lo[r], hi[r]) of its sequence, whose slot numbers are slots[off[r] + position]. Query
 * head h reads KV head h / (H / KV) (grouped-query attention). Single-threaded per call.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LANES 16
#define MAX_VECS 16 /* head_dim up to 256 */

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t i16v __attribute__((vector_size(64)));

static inline __attribute__((always_inline)) v16 load(const float *p) {
    v16 x;
    memcpy(&x, p, sizeof x);
    return x;
}

static inline __attribute__((always_inline)) void store(float *p, v16 x) { memcpy(p, &x, sizeof x); }

/* Lane 0 of a fixed tree: (l, l + 8), then (l, l + 4), (l, l + 2), (l, l + 1). */
static inline __attribute__((always_inline)) float hsum(v16 a) {
#ifdef __clang__
    a += __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    a += __builtin_shufflevector(a, a, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3);
    a += __builtin_shufflevector(a, a, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1);
    a += __builtin_shufflevector(a, a, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0);
#else
    a += __builtin_shuffle(a, (i16v){8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7});
    a += __builtin_shuffle(a, (i16v){4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3});
    a += __builtin_shuffle(a, (i16v){2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1});
    a += __builtin_shuffle(a, (i16v){1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0});
#endif
    return a[0];
}

/* q . k before the tree: lane l accumulates elements l, l + 16, ... in order (a tail shorter than 16 goes to
   lanes 0..). */
static inline __attribute__((always_inline)) v16 lanes(const float *a, const float *b, int d) {
    v16 acc = {0};
    int i = 0;
    for (; i + LANES <= d; i += LANES) acc += load(a + i) * load(b + i);
    for (int l = 0; i < d; i++, l++) acc[l] += a[i] * b[i];
    return acc;
}

static inline __attribute__((always_inline)) float dot(const float *a, const float *b, int d) {
    return hsum(lanes(a, b, d));
}

#ifdef __clang__
#define SHUF2(a, b, ...) __builtin_shufflevector((a), (b), __VA_ARGS__)
#else
#define SHUF2(a, b, ...) __builtin_shuffle((a), (b), (i16v){__VA_ARGS__})
#endif

/* The four levels of hsum's tree for 16 vectors at once: lane j of the result is hsum(a[j]), bit for bit (the
   same additions of the same operands; the shuffles only pack two vectors' halves into one). */
static inline __attribute__((always_inline)) v16 hsum16(const v16 *a) {
    v16 c[8], e[4], f[2];
    for (int m = 0; m < 8; m++)
        c[m] = SHUF2(a[2 * m], a[2 * m + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
               SHUF2(a[2 * m], a[2 * m + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    for (int m = 0; m < 4; m++)
        e[m] = SHUF2(c[2 * m], c[2 * m + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
               SHUF2(c[2 * m], c[2 * m + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    for (int m = 0; m < 2; m++)
        f[m] = SHUF2(e[2 * m], e[2 * m + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29) +
               SHUF2(e[2 * m], e[2 * m + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
    return SHUF2(f[0], f[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
           SHUF2(f[0], f[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}

/* dot(q, k_j) for the 16 keys whose slots are slots[0..15], as one vector (each lane bit for bit dot()). */
static inline __attribute__((always_inline)) v16 dot16(const float *q, const float *kc, const int64_t *slots,
                                                       int64_t base, int d) {
    v16 acc[LANES];
    for (int j = 0; j < LANES; j++) acc[j] = lanes(q, kc + slots[j] * base, d);
    return hsum16(acc);
}

/* exp(v) for v <= 0, 16 at a time: Cephes' single-precision polynomial on vectors, so every element of every
   row goes through the same instructions (no scalar peel or tail whose split would depend on the buffer's
   alignment or length). A NaN stays NaN (the clamp below keeps it: NaN compares false). */
static inline __attribute__((always_inline)) v16 exp16(v16 v) {
    v16 lo = (v16){0} - 87.0f;
    v = (v16)((i16v)(v < lo) & (i16v)lo) + (v16)((i16v)(v >= lo | v != v) & (i16v)v);
    v16 t = v * 1.44269504088896341f + 0.5f;
    i16v ti = __builtin_convertvector(t, i16v); /* truncates toward zero */
    ti += (i16v)(t < __builtin_convertvector(ti, v16)); /* ... so step down where that rounded up: floor */
    v16 k = __builtin_convertvector(ti, v16);
    v16 r = v - k * 0.693359375f;
    r = r + k * 2.12194440e-4f;
    v16 p = (v16){0} + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    return p * (v16)((ti + 127) << 23);
}

/* x[i] = exp(x[i] - m) for i < n; x has room for n rounded up to 16 (the padding is written, never read). */
static void exp_shifted(float *x, int n, float m) {
    for (int i = 0; i < n; i += LANES) store(x + i, exp16(load(x + i) - m));
}

/* Sum in 16 lane partials (element i to lane i mod 16, in order), then the fixed tree. */
static float sum(const float *x, int n) {
    v16 acc = {0};
    int i = 0;
    for (; i + LANES <= n; i += LANES) acc += load(x + i);
    for (int l = 0; i < n; i++, l++) acc[l] += x[i];
    return hsum(acc);
}

#define BLOCK 4 /* consecutive query rows of one sequence attended head by head together: one KV head's keys are
                   reused by all four while in cache (measured: prefill ~4 % faster than row by row) */

/* Query head `head` of up to BLOCK rows of one sequence that see keys from the same `lo` (row i: q_i, keys
   [lo, hi_i)): out_i = softmax(q_i . k_j * scale) . v_j. Each row's arithmetic is exactly that of the row alone:
   its scores are independent products (16 keys at a time through hsum16, the rest through dot: the same bits
   either way), its maximum is exact, its exponentials elementwise, and its sum and its weighted values run over
   its own keys in increasing order. */
static inline __attribute__((always_inline)) void attend_block(const float *const *q, const float *kc,
                                                               const float *vc, const int64_t *slots, int64_t lo,
                                                               const int64_t *hi, int rows, int kv, int kv_stride,
                                                               int d, float scale, float *scores, int64_t stride,
                                                               float *const *out) {
    int nv = d / LANES;
    float m[BLOCK];
    for (int i = 0; i < rows; i++) {
        float *row = scores + i * stride;
        int64_t j = lo;
        for (; j + LANES <= hi[i]; j += LANES) /* kv_stride, d: the slot's row, then the KV head's offset */
            store(row + (j - lo), dot16(q[i], kc + (int64_t)kv * d, slots + j, kv_stride, d) * scale);
        for (; j < hi[i]; j++) row[j - lo] = dot(q[i], kc + slots[j] * kv_stride + (int64_t)kv * d, d) * scale;
        float top = row[0]; /* the maximum is exact, whatever the order */
        for (int64_t t = 1; t < hi[i] - lo; t++) top = row[t] > top ? row[t] : top;
        m[i] = top;
    }
    float inv[BLOCK];
    for (int i = 0; i < rows; i++) {
        exp_shifted(scores + i * stride, (int)(hi[i] - lo), m[i]);
        inv[i] = 1.0f / sum(scores + i * stride, (int)(hi[i] - lo));
    }
    for (int i = 0; i < rows; i++) {
        v16 acc[MAX_VECS];
        float tail[LANES];
        const float *w = scores + i * stride;
        for (int t = 0; t < nv; t++) acc[t] = (v16){0};
        for (int c = nv * LANES; c < d; c++) tail[c - nv * LANES] = 0.0f;
        for (int64_t j = lo; j < hi[i]; j++) {
            const float *v = vc + slots[j] * kv_stride + (int64_t)kv * d;
            float wj = w[j - lo];
            for (int t = 0; t < nv; t++) acc[t] += wj * load(v + t * LANES);
            for (int c = nv * LANES; c < d; c++) tail[c - nv * LANES] += wj * v[c];
        }
        for (int t = 0; t < nv; t++) store(out[i] + t * LANES, acc[t] * inv[i]);
        for (int c = nv * LANES; c < d; c++) out[i][c] = tail[c - nv * LANES] * inv[i];
    }
}

/* Returns 0; 1 if the score buffer could not be allocated; 2 if d > 16 * MAX_VECS (nothing written then). */
int jp_attend_rows(const float *q, const float *kc, const float *vc, const int64_t *slots, const int64_t *off,
                   const int64_t *lo, const int64_t *hi, const int64_t *rows, int n_rows, int h, int kv, int d,
                   float scale, float *out) {
    if (d > LANES * MAX_VECS) return 2;
    int64_t longest = 1;
    for (int r = 0; r < n_rows; r++)
        if (hi[r] - lo[r] > longest) longest = hi[r] - lo[r];
    longest = (longest + LANES - 1) / LANES * LANES; /* exp16 writes whole vectors */
    float *scores = malloc((size_t)BLOCK * (size_t)longest * sizeof(float));
    if (!scores) return 1;
    int group = h / kv, kv_stride = kv * d;
    /* Rows are taken in blocks of consecutive rows of one sequence (same slot list, same first key). The common
       head sizes get a body compiled for their size (registers, no loop over d); the arithmetic is the same. */
#define JP_ROWS(D)                                                                                              \
    for (int r = 0; r < n_rows;) {                                                                              \
        int rows_in = 1;                                                                                        \
        while (rows_in < BLOCK && r + rows_in < n_rows && off[r + rows_in] == off[r] && lo[r + rows_in] == lo[r]) \
            rows_in++;                                                                                          \
        for (int head = 0; head < h; head++) {                                                                  \
            const float *qs[BLOCK];                                                                             \
            float *outs[BLOCK];                                                                                 \
            for (int i = 0; i < rows_in; i++) {                                                                 \
                int64_t at = (rows[r + i] * h + head) * (int64_t)(D);                                           \
                qs[i] = q + at;                                                                                 \
                outs[i] = out + at;                                                                             \
            }                                                                                                   \
            attend_block(qs, kc, vc, slots + off[r], lo[r], hi + r, rows_in, head / group, kv_stride, (D),      \
                         scale, scores, longest, outs);                                                         \
        }                                                                                                       \
        r += rows_in;                                                                                           \
    }
    switch (d) {
    case 64: JP_ROWS(64); break;
    case 128: JP_ROWS(128); break;
    case 32: JP_ROWS(32); break;
    default: JP_ROWS(d);
    }
#undef JP_ROWS
    free(scores);
    return 0;
}
