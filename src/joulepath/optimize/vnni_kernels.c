/* Batch-1..8 int8 / int4 weight GEMV kernels on AVX512-VNNI (vpdpbusd), for joulepath.optimize.vnni.
 *
 * Plain C, no torch headers: built by `vnni.py` with the system gcc
 * (-O3 -mavx512f -mavx512bw -mavx512vnni -fopenmp -fPIC -shared) and called through ctypes with tensor data
 * pointers. One call streams the weight once per chunk of up to 8 tokens, its superblocks split over nt OpenMP
 * threads, the last argument (one thread per output row: the bits do not depend on the count).
 *
 * Activations: each token row is quantized symmetrically to int8 (scale = absmax / 127, round half to even),
 * the signed operand of vpdpbusd. Weights are the unsigned operand:
 *   int8: per-output-channel symmetric codes w in [-127, 127] stored as w + 128 (u8); the +128 is removed with
 *         the token's activation sum: sum (w + 128) x = sum w x + 128 sum x.
 *   int4: group-wise asymmetric codes c in [0, 15] (w = c * scale + min per group of G inputs), two per byte;
 *         per group: scale * sum c x + min * sum x, with sum x per token and group from the quantizer.
 * Layout: 16 output rows x 4 consecutive inputs per 64-byte vector (a vpdpbusd lane = one output row), so
 * no horizontal sums; 4 such 16-row blocks interleaved per input step, so that one call reads one sequential
 * stream while keeping 4 independent accumulator chains (N padded to 64 rows):
 * int8 [N/64][Kp/4][4][16][4] bytes; int4 [N/64][K/8][4][16][4] bytes whose low nibbles hold inputs
 * 8t..8t+3 and high nibbles 8t+4..8t+7. int4 scales and mins: bf16 [N/16][K/G][2][16].
 * int32 bounds: int8 |sum| <= 255 * 127 * K (kernel asserts K <= 65536 in Python); int4 per group tiny.
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

#define JP_MAX_M 8
#define JP_SB 4 /* 16-row blocks interleaved per superblock */
#ifndef JP_PF
#define JP_PF 0 /* software prefetch distance in bytes along the weight stream (0: none; measured no gain) */
#endif
#define INLINE static inline __attribute__((always_inline))

/* Quantize rows [m0, m0 + mc) of x (row stride ldx) to int8 xq [mc][Kp] (zero padded), scales sx[mc] and
 * the sums of each row's codes over groups of G inputs (gsum [mc][ngroups]); G = Kp gives one sum per row. */
static void quantize_rows(const float *x, int64_t ldx, int mc, int K, int Kp, int G, int8_t *xq, float *sx,
                          int32_t *gsum) {
    int ngroups = (Kp + G - 1) / G;
    for (int m = 0; m < mc; m++) {
        const float *row = x + (int64_t)m * ldx;
        __m512 amax = _mm512_setzero_ps();
        __mmask16 nan = 0;
        for (int k = 0; k < K; k += 16) {
            __mmask16 mk = (K - k >= 16) ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1);
            __m512 v = _mm512_maskz_loadu_ps(mk, row + k);
            nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);  /* max_ps would drop a NaN */
            amax = _mm512_max_ps(amax, _mm512_abs_ps(v));
        }
        float absmax = _mm512_reduce_max_ps(amax);
        float inv = absmax > 0.0f ? 127.0f / absmax : 0.0f;
        /* a NaN input makes the row's output NaN, as an fp32 GEMM would (an inf one: absmax inf, NaN/inf out) */
        sx[m] = nan ? NAN : absmax / 127.0f;
        __m512 vinv = _mm512_set1_ps(inv);
        int8_t *q = xq + (int64_t)m * Kp;
        memset(q, 0, (size_t)Kp);
        for (int g = 0; g < ngroups; g++) {
            int kend = (g + 1) * G < K ? (g + 1) * G : K;
            __m512i s = _mm512_setzero_si512();
            for (int k = g * G; k < kend; k += 16) {
                __mmask16 mk = (kend - k >= 16) ? (__mmask16)0xFFFF : (__mmask16)((1u << (kend - k)) - 1);
                __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(mk, row + k), vinv));
                s = _mm512_add_epi32(s, v);
                _mm512_mask_cvtsepi32_storeu_epi8(q + k, mk, v);
            }
            gsum[m * ngroups + g] = _mm512_reduce_add_epi32(s);
        }
    }
}

INLINE int32_t load4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

INLINE __mmask16 tail_mask(int rows) {
    return rows >= 16 ? (__mmask16)0xFFFF : rows <= 0 ? (__mmask16)0 : (__mmask16)((1u << rows) - 1);
}

/* int8: NB blocks of 16 rows starting at block b0 (NB divides JP_SB, b0 % NB == 0: one superblock), M tokens
 * (M and NB are compile-time constants after inlining). */
INLINE void i8_blocks(const int M, const int NB, int b0, int N, int Kp, const uint8_t *W, const float *ws,
                      const float *bias, const int8_t *xq, const float *sx, const int32_t *xsum, float *y,
                      int64_t ldy) {
    __m512i acc[8][JP_MAX_M];
#pragma GCC unroll 8
    for (int b = 0; b < NB; b++)
#pragma GCC unroll 8
        for (int m = 0; m < M; m++) acc[b][m] = _mm512_setzero_si512();
    const uint8_t *wb = W + (int64_t)(b0 / JP_SB) * Kp * 16 * JP_SB + (b0 % JP_SB) * 64;
    for (int k = 0; k < Kp; k += 4) {
        __m512i w[8];
        const uint8_t *wk = wb + (int64_t)k * 16 * JP_SB;
        if (JP_PF) _mm_prefetch((const char *)(wk + JP_PF), _MM_HINT_T0);
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++) w[b] = _mm512_loadu_si512((const void *)(wk + b * 64));
#pragma GCC unroll 8
        for (int m = 0; m < M; m++) {
            __m512i xb = _mm512_set1_epi32(load4(xq + (int64_t)m * Kp + k));
#pragma GCC unroll 8
            for (int b = 0; b < NB; b++) acc[b][m] = _mm512_dpbusd_epi32(acc[b][m], w[b], xb);
        }
    }
#pragma GCC unroll 8
    for (int b = 0; b < NB; b++) {
        int n = (b0 + b) * 16;
        __mmask16 mk = tail_mask(N - n);
        __m512 scale = _mm512_maskz_loadu_ps(mk, ws + n);
        __m512 bv = bias ? _mm512_maskz_loadu_ps(mk, bias + n) : _mm512_setzero_ps();
#pragma GCC unroll 8
        for (int m = 0; m < M; m++) {
            __m512i d = _mm512_sub_epi32(acc[b][m], _mm512_set1_epi32(128 * xsum[m]));
            /* one FMA, written out: gcc contracted mul + add into it anyway, and avx2_kernels.c must match it */
            __m512 f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(scale, _mm512_set1_ps(sx[m])), bv);
            _mm512_mask_storeu_ps(y + m * ldy + n, mk, f);
        }
    }
}

/* One superblock (4 x 16 rows) at a time, its tokens in groups of up to 4 (16 accumulators): the first group
 * streams the superblock from memory in one sequential pass, the second re-reads it from L2. */
static void i8_chunk(int mc, int N, int Kp, const uint8_t *W, const float *ws, const float *bias, const int8_t *xq,
                     const float *sx, const int32_t *xsum, float *y, int64_t ldy, int nt) {
    int nblk = (N + 16 * JP_SB - 1) / (16 * JP_SB) * JP_SB;
    /* superblocks split over nt OpenMP threads: each output row is one thread's, computed exactly as
     * single-threaded, so the bits do not depend on the count */
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && nblk >= 2 * JP_SB)
    for (int b = 0; b < nblk; b += JP_SB) {
        for (int m0 = 0; m0 < mc; m0 += 4) {
            const int8_t *q = xq + (int64_t)m0 * Kp;
            float *yy = y + m0 * ldy;
            switch (mc - m0 < 4 ? mc - m0 : 4) {
            case 1: i8_blocks(1, JP_SB, b, N, Kp, W, ws, bias, q, sx + m0, xsum + m0, yy, ldy); break;
            case 2: i8_blocks(2, JP_SB, b, N, Kp, W, ws, bias, q, sx + m0, xsum + m0, yy, ldy); break;
            case 3: i8_blocks(3, JP_SB, b, N, Kp, W, ws, bias, q, sx + m0, xsum + m0, yy, ldy); break;
            default: i8_blocks(4, JP_SB, b, N, Kp, W, ws, bias, q, sx + m0, xsum + m0, yy, ldy); break;
            }
        }
    }
}

/* y[M][N] (row stride ldy) = x[M][K] (row stride ldx) @ dequant(W) + bias, over nt threads. Returns 0, or -1
 * (no memory). */
int jp_i8_linear(const float *x, int64_t ldx, int M, int K, int N, const uint8_t *W, const float *ws,
                 const float *bias, float *y, int64_t ldy, int nt) {
    int Kp = (K + 3) & ~3;
    int8_t *xq = (int8_t *)aligned_alloc(64, (size_t)(JP_MAX_M * Kp + 64) & ~(size_t)63);
    if (!xq) return -1;
    float sx[JP_MAX_M];
    int32_t xsum[JP_MAX_M];
    for (int m0 = 0; m0 < M; m0 += JP_MAX_M) {
        int mc = M - m0 < JP_MAX_M ? M - m0 : JP_MAX_M;
        quantize_rows(x + (int64_t)m0 * ldx, ldx, mc, K, Kp, Kp, xq, sx, xsum);
        i8_chunk(mc, N, Kp, W, ws, bias, xq, sx, xsum, y + (int64_t)m0 * ldy, ldy, nt);
    }
    free(xq);
    return 0;
}

INLINE __m512 bf16x16(const uint16_t *p) {
    __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

/* int4: NB blocks from b0; groups of G inputs (G % 8 == 0, K % G == 0). */
INLINE void i4_blocks(const int M, const int NB, int b0, int N, int K, int G, const uint8_t *W, const uint16_t *sz,
                      const float *bias, const int8_t *xq, const float *sx, const int32_t *gsum, float *y,
                      int64_t ldy) {
    const int ngroups = K / G;
    const int64_t zs = (int64_t)ngroups * 32; /* bf16 values per block */
    const __m512i low = _mm512_set1_epi8(0x0F);
    __m512 facc[8][JP_MAX_M];
#pragma GCC unroll 8
    for (int b = 0; b < NB; b++)
#pragma GCC unroll 8
        for (int m = 0; m < M; m++) facc[b][m] = _mm512_setzero_ps();
    const uint8_t *wb = W + (int64_t)(b0 / JP_SB) * K * 8 * JP_SB + (b0 % JP_SB) * 64;
    const uint16_t *zb = sz + (int64_t)b0 * zs;
    for (int g = 0; g < ngroups; g++) {
        __m512i acc[8][JP_MAX_M];
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++)
#pragma GCC unroll 8
            for (int m = 0; m < M; m++) acc[b][m] = _mm512_setzero_si512();
        for (int k = g * G; k < (g + 1) * G; k += 8) {
            __m512i lo[8], hi[8];
            const uint8_t *wk = wb + (int64_t)k * 8 * JP_SB;
            if (JP_PF) _mm_prefetch((const char *)(wk + JP_PF), _MM_HINT_T0);
#pragma GCC unroll 8
            for (int b = 0; b < NB; b++) {
                __m512i v = _mm512_loadu_si512((const void *)(wk + b * 64));
                lo[b] = _mm512_and_si512(v, low);
                hi[b] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
            }
#pragma GCC unroll 8
            for (int m = 0; m < M; m++) {
                __m512i x0 = _mm512_set1_epi32(load4(xq + (int64_t)m * K + k));
                __m512i x1 = _mm512_set1_epi32(load4(xq + (int64_t)m * K + k + 4));
#pragma GCC unroll 8
                for (int b = 0; b < NB; b++) {
                    acc[b][m] = _mm512_dpbusd_epi32(acc[b][m], lo[b], x0);
                    acc[b][m] = _mm512_dpbusd_epi32(acc[b][m], hi[b], x1);
                }
            }
        }
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++) {
            __m512 s = bf16x16(zb + b * zs + g * 32), z = bf16x16(zb + b * zs + g * 32 + 16);
#pragma GCC unroll 8
            for (int m = 0; m < M; m++) {
                facc[b][m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[b][m]), s, facc[b][m]);
                facc[b][m] = _mm512_fmadd_ps(_mm512_set1_ps((float)gsum[m * ngroups + g]), z, facc[b][m]);
            }
        }
    }
#pragma GCC unroll 8
    for (int b = 0; b < NB; b++) {
        int n = (b0 + b) * 16;
        __mmask16 mk = tail_mask(N - n);
        __m512 bv = bias ? _mm512_maskz_loadu_ps(mk, bias + n) : _mm512_setzero_ps();
#pragma GCC unroll 8
        for (int m = 0; m < M; m++)
            _mm512_mask_storeu_ps(y + m * ldy + n, mk, _mm512_fmadd_ps(facc[b][m], _mm512_set1_ps(sx[m]), bv));
    }
}

/* As i8_chunk: superblock by superblock, tokens in groups of up to 4. */
static void i4_chunk(int mc, int N, int K, int G, const uint8_t *W, const uint16_t *sz, const float *bias,
                     const int8_t *xq, const float *sx, const int32_t *gsum, float *y, int64_t ldy, int nt) {
    int nblk = (N + 16 * JP_SB - 1) / (16 * JP_SB) * JP_SB, ngroups = K / G;
    /* superblocks split over nt OpenMP threads: each output row is one thread's, computed exactly as
     * single-threaded, so the bits do not depend on the count */
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && nblk >= 2 * JP_SB)
    for (int b = 0; b < nblk; b += JP_SB) {
        for (int m0 = 0; m0 < mc; m0 += 4) {
            const int8_t *q = xq + (int64_t)m0 * K;
            const int32_t *gs = gsum + m0 * ngroups;
            float *yy = y + m0 * ldy;
            switch (mc - m0 < 4 ? mc - m0 : 4) {
            case 1: i4_blocks(1, JP_SB, b, N, K, G, W, sz, bias, q, sx + m0, gs, yy, ldy); break;
            case 2: i4_blocks(2, JP_SB, b, N, K, G, W, sz, bias, q, sx + m0, gs, yy, ldy); break;
            case 3: i4_blocks(3, JP_SB, b, N, K, G, W, sz, bias, q, sx + m0, gs, yy, ldy); break;
            default: i4_blocks(4, JP_SB, b, N, K, G, W, sz, bias, q, sx + m0, gs, yy, ldy); break;
            }
        }
    }
}

/* int4 twin of jp_i8_linear; K % G == 0 and G % 8 == 0 (checked in Python). */
int jp_i4_linear(const float *x, int64_t ldx, int M, int K, int N, int G, const uint8_t *W, const uint16_t *sz,
                 const float *bias, float *y, int64_t ldy, int nt) {
    int ngroups = K / G;
    int8_t *xq = (int8_t *)aligned_alloc(64, (size_t)(JP_MAX_M * K + 64) & ~(size_t)63);
    int32_t *gsum = (int32_t *)malloc(sizeof(int32_t) * (size_t)(JP_MAX_M * ngroups));
    if (!xq || !gsum) {
        free(xq);
        free(gsum);
        return -1;
    }
    float sx[JP_MAX_M];
    for (int m0 = 0; m0 < M; m0 += JP_MAX_M) {
        int mc = M - m0 < JP_MAX_M ? M - m0 : JP_MAX_M;
        quantize_rows(x + (int64_t)m0 * ldx, ldx, mc, K, K, G, xq, sx, gsum);
        i4_chunk(mc, N, K, G, W, sz, bias, xq, sx, gsum, y + (int64_t)m0 * ldy, ldy, nt);
    }
    free(xq);
    free(gsum);
    return 0;
}

/* The same arguments as jp_i4_linear and nothing done: what a ctypes call costs by itself. */
int jp_noop(const float *x, int64_t ldx, int M, int K, int N, int G, const uint8_t *W, const uint16_t *sz,
            const float *bias, float *y, int64_t ldy, int nt) {
    (void)nt;
    (void)x; (void)ldx; (void)M; (void)K; (void)N; (void)G; (void)W; (void)sz; (void)bias; (void)y; (void)ldy;
    return 0;
}
