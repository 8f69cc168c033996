/* Batch-1..8 int8 / int4 weight GEMV kernels on AVX2, for x86-64 CPUs without AVX512-VNNI (AMD Zen 2/3, Intel
 * before Ice Lake), for joulepath.optimize.vnni.
 *
 * The twin of vnni_kernels.c: the same three entry points and arguments, the same packed weight layouts, the
 * same activation quantization and the same fp32 epilogue, so both builds give bit-identical outputs (the
 * integer sums are exact on both; the float operations are the same, in the same order, lane by lane). Built by
 * `vnni.py` with the system gcc (-O3 -mavx2 -mfma -fopenmp -fPIC -shared) where the CPU lacks AVX512-VNNI.
 *
 * AVX2 has no vpdpbusd. The int8 dot products use vpmaddubsw, whose int16 pair sums saturate for u8 x s8 in
 * general; the operands are arranged so that they cannot (llama.cpp's trick): |x| (u8, <= 128) times
 * w * sign(x) (s8, |w| <= 127), so a pair sum is at most 2 * 128 * 127 = 32,512 < 32,767. The weights are
 * stored as w + 128 (the VNNI kernel's unsigned operand); xor 0x80 gives w back, so the sum is sum w x. The
 * VNNI kernel subtracts 128 x (the token's unsaturated code sum) from sum (w + 128) x; the two agree exactly
 * when no code saturated, and for rows where one did (an inf, or an absmax below 127 / FLT_MAX, both of whose
 * outputs are meaningless anyway) this kernel adds the same 128 x (saturated sum - unsaturated sum), so even
 * those bits match. int4 codes c in [0, 15] are unsigned already: c x pair sums are at most 2 * 15 * 128 and
 * the low and high nibbles' sums add in int16 without overflow (<= 7,680). The fp32 epilogues are written as
 * explicit FMAs in both files (a compiler's contraction choice cannot make them differ).
 * A 32-byte load is 8 output rows x 4 inputs; vpmaddwd with ones then leaves one int32 per row.
 * Layouts (N padded to 64): int8 [N/64][Kp/4][4][16][4] bytes; int4 [N/64][K/8][4][16][4], low nibbles
 * inputs 8t..8t+3, high nibbles 8t+4..8t+7; int4 scales and mins bf16 [N/16][K/G][2][16].
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

#define JP_MAX_M 8
#define JP_SB 4 /* 16-row blocks interleaved per superblock */
#ifndef JP_PF
/* software prefetch distance in bytes along a block's weight stream (4 input steps ahead; 0: none). On a Zen 3
 * core, cold weights, 1 token: int8 6-14 % and int4 15-28 % faster than none; 2,048 and 4,096 within noise of it */
#define JP_PF 1024
#endif
#define INLINE static inline __attribute__((always_inline))

INLINE float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

INLINE int32_t hsum8_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* x * inv rounded as cvtps does (the current rounding mode: nearest even), as int32. */
INLINE int32_t round_code(float v) { return _mm_cvtss_si32(_mm_set_ss(v)); }

INLINE int8_t saturate8(int32_t v) { return (int8_t)(v > 127 ? 127 : v < -128 ? -128 : v); }

/* As vnni_kernels.c's quantize_rows: rows [m0, m0 + mc) of x to int8 xq [mc][Kp] (zero padded), scales sx[mc]
 * and each row's (unsaturated) code sums over groups of G inputs (G = Kp: one sum per row); with `qsum`, also
 * each row's sum of the stored (saturated) codes, int32 wrapping (int8's correction, see the header). */
static void quantize_rows(const float *x, int64_t ldx, int mc, int K, int Kp, int G, int8_t *xq, float *sx,
                          int32_t *gsum, int32_t *qsum) {
    int ngroups = (Kp + G - 1) / G;
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    for (int m = 0; m < mc; m++) {
        const float *row = x + (int64_t)m * ldx;
        __m256 amax = _mm256_setzero_ps(), unord = _mm256_setzero_ps();
        int k = 0;
        for (; k + 8 <= K; k += 8) {
            __m256 v = _mm256_loadu_ps(row + k);
            unord = _mm256_or_ps(unord, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
            amax = _mm256_max_ps(amax, _mm256_and_ps(v, absmask));
        }
        float absmax = hmax8(amax);
        int nan = _mm256_movemask_ps(unord) != 0;
        for (; k < K; k++) {
            if (row[k] != row[k]) nan = 1;
            else if (fabsf(row[k]) > absmax) absmax = fabsf(row[k]);
        }
        float inv = absmax > 0.0f ? 127.0f / absmax : 0.0f;
        sx[m] = nan ? NAN : absmax / 127.0f; /* a NaN input makes the row's output NaN, as an fp32 GEMM would */
        __m256 vinv = _mm256_set1_ps(inv);
        int8_t *q = xq + (int64_t)m * Kp;
        memset(q, 0, (size_t)Kp);
        uint32_t stored = 0;
        for (int g = 0; g < ngroups; g++) {
            int kend = (g + 1) * G < K ? (g + 1) * G : K;
            __m256i s = _mm256_setzero_si256(), sq = _mm256_setzero_si256();
            const __m256i hi8 = _mm256_set1_epi32(127), lo8 = _mm256_set1_epi32(-128);
            uint32_t tail = 0, tail_q = 0; /* unsigned: a NaN row's codes may wrap, harmlessly */
            int j = g * G;
            for (; j + 8 <= kend; j += 8) {
                __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(row + j), vinv));
                s = _mm256_add_epi32(s, v);
                sq = _mm256_add_epi32(sq, _mm256_max_epi32(_mm256_min_epi32(v, hi8), lo8));
                __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
                _mm_storel_epi64((__m128i *)(q + j), _mm_packs_epi16(w16, w16)); /* saturating, as cvtsepi32 */
            }
            for (; j < kend; j++) {
                int32_t v = round_code(row[j] * inv);
                tail += (uint32_t)v;
                q[j] = saturate8(v);
                tail_q += (uint32_t)(int32_t)q[j];
            }
            gsum[m * ngroups + g] = (int32_t)((uint32_t)hsum8_epi32(s) + tail);
            stored += (uint32_t)hsum8_epi32(sq) + tail_q;
        }
        if (qsum) qsum[m] = (int32_t)stored;
    }
}

INLINE int32_t load4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Mask of the first `rows` of 8 lanes (all ones per lane), for maskstore. */
INLINE __m256i lane_mask(int rows) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(rows < 0 ? 0 : rows), idx);
}

INLINE void store_rows(float *p, int rows, __m256 v) {
    if (rows >= 8) _mm256_storeu_ps(p, v);
    else if (rows > 0) _mm256_maskstore_ps(p, lane_mask(rows), v);
}

INLINE __m256 load_rows(const float *p, int rows) {
    if (rows >= 8) return _mm256_loadu_ps(p);
    return rows > 0 ? _mm256_maskload_ps(p, lane_mask(rows)) : _mm256_setzero_ps();
}

/* sum over 4 inputs of w * x per row, for 8 rows: w (s8, 8 rows x 4), xb (the 4 codes broadcast), ax = |xb|. */
INLINE __m256i dot4(__m256i w, __m256i xb, __m256i ax, __m256i ones) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(w, xb)), ones);
}

/* int8: NB blocks of 16 rows starting at block b0 (within one superblock), M tokens (compile-time constants
 * after inlining; 2 * NB * M accumulators, NB * M <= 8); CORR: add the saturated rows' correction xcorr. */
INLINE void i8_blocks(const int M, const int NB, const int CORR, int b0, int N, int Kp, const uint8_t *W,
                      const float *ws, const float *bias, const int8_t *xq, const float *sx, const int32_t *xcorr,
                      float *y, int64_t ldy) {
    __m256i acc[4][2][4];
    const __m256i ones = _mm256_set1_epi16(1), flip = _mm256_set1_epi8((char)0x80);
#pragma GCC unroll 4
    for (int b = 0; b < NB; b++)
#pragma GCC unroll 4
        for (int m = 0; m < M; m++) acc[b][0][m] = acc[b][1][m] = _mm256_setzero_si256();
    const uint8_t *wb = W + (int64_t)(b0 / JP_SB) * Kp * 16 * JP_SB + (b0 % JP_SB) * 64;
    for (int k = 0; k < Kp; k += 4) {
        const uint8_t *wk = wb + (int64_t)k * 16 * JP_SB;
        __m256i xb[4], ax[4];
#pragma GCC unroll 4
        for (int m = 0; m < M; m++) {
            xb[m] = _mm256_set1_epi32(load4(xq + (int64_t)m * Kp + k));
            ax[m] = _mm256_sign_epi8(xb[m], xb[m]);
        }
#pragma GCC unroll 4
        for (int b = 0; b < NB; b++) {
            if (JP_PF) _mm_prefetch((const char *)(wk + b * 64 + JP_PF), _MM_HINT_T0);
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                __m256i w = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(wk + b * 64 + h * 32)), flip);
#pragma GCC unroll 4
                for (int m = 0; m < M; m++) acc[b][h][m] = _mm256_add_epi32(acc[b][h][m], dot4(w, xb[m], ax[m], ones));
            }
        }
    }
#pragma GCC unroll 4
    for (int b = 0; b < NB; b++) {
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            int n = (b0 + b) * 16 + h * 8;
            __m256 scale = load_rows(ws + n, N - n);
            __m256 bv = bias ? load_rows(bias + n, N - n) : _mm256_setzero_ps();
#pragma GCC unroll 4
            for (int m = 0; m < M; m++) {
                __m256i d = CORR ? _mm256_add_epi32(acc[b][h][m], _mm256_set1_epi32(xcorr[m])) : acc[b][h][m];
                __m256 f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_mul_ps(scale, _mm256_set1_ps(sx[m])), bv);
                store_rows(y + m * ldy + n, N - n, f);
            }
        }
    }
}

/* Block groups of NB within each superblock, tokens in groups of M: the first token group streams the group's
 * rows from memory, later ones re-read them from L2 (a superblock is 64 x Kp bytes). (M, NB) = (1, 4), (2, 4)
 * and (4, 2) were the fastest of the tried splits on a Zen 3 core (512 -> 3072, 1536 -> 512, 4864 -> 896 and
 * 896 -> 1152 at 1-8 tokens: 8 tokens 20-25 % faster than (4, 1), at 1 token the same), though 16 accumulators
 * exceed AVX2's 16 registers: the weight vectors are then reused across more tokens per load. */
#define I8_CALL(MM, NBB)                                                                                         \
    for (int bg = 0; bg < JP_SB; bg += NBB) {                                                                   \
        if (corr) i8_blocks(MM, NBB, 1, b + bg, N, Kp, W, ws, bias, q, sx + m0, xcorr + m0, yy, ldy);           \
        else i8_blocks(MM, NBB, 0, b + bg, N, Kp, W, ws, bias, q, sx + m0, xcorr + m0, yy, ldy);                \
    }

static void i8_chunk(int mc, int N, int Kp, const uint8_t *W, const float *ws, const float *bias, const int8_t *xq,
                     const float *sx, const int32_t *xcorr, float *y, int64_t ldy, int nt) {
    int nblk = (N + 16 * JP_SB - 1) / (16 * JP_SB) * JP_SB, corr = 0;
    for (int m = 0; m < mc; m++) corr |= xcorr[m] != 0; /* only rows whose codes saturated need it (measured: the
                                                          * add in every epilogue cost ~5 % at 8 tokens) */
    /* superblocks split over nt OpenMP threads: each output row is one thread's, computed exactly as
     * single-threaded, so the bits do not depend on the count */
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && nblk >= 2 * JP_SB)
    for (int b = 0; b < nblk; b += JP_SB) {
        for (int m0 = 0; m0 < mc;) {
            const int8_t *q = xq + (int64_t)m0 * Kp;
            float *yy = y + m0 * ldy;
            int left = mc - m0;
            if (left == 1) { I8_CALL(1, 4); m0 += 1; }
            else if (left == 2 || left == 3) { I8_CALL(2, 4); m0 += 2; }
            else { I8_CALL(4, 2); m0 += 4; }
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
    int32_t xsum[JP_MAX_M], qsum[JP_MAX_M], xcorr[JP_MAX_M];
    for (int m0 = 0; m0 < M; m0 += JP_MAX_M) {
        int mc = M - m0 < JP_MAX_M ? M - m0 : JP_MAX_M;
        quantize_rows(x + (int64_t)m0 * ldx, ldx, mc, K, Kp, Kp, xq, sx, xsum, qsum);
        for (int m = 0; m < mc; m++) /* 0 unless a code saturated: the VNNI kernel's exact int32 result */
            xcorr[m] = (int32_t)(128u * ((uint32_t)qsum[m] - (uint32_t)xsum[m]));
        i8_chunk(mc, N, Kp, W, ws, bias, xq, sx, xcorr, y + (int64_t)m0 * ldy, ldy, nt);
    }
    free(xq);
    return 0;
}

INLINE __m256 bf16x8(const uint16_t *p) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

/* int4: NB blocks from b0, M tokens (NB * M <= 4); groups of G inputs (G % 8 == 0, K % G == 0). */
INLINE void i4_blocks(const int M, const int NB, int b0, int N, int K, int G, const uint8_t *W, const uint16_t *sz,
                      const float *bias, const int8_t *xq, const float *sx, const int32_t *gsum, float *y,
                      int64_t ldy) {
    const int ngroups = K / G;
    const int64_t zs = (int64_t)ngroups * 32; /* bf16 values per block */
    const __m256i low = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    __m256 facc[4][2][4];
#pragma GCC unroll 4
    for (int b = 0; b < NB; b++)
#pragma GCC unroll 4
        for (int m = 0; m < M; m++) facc[b][0][m] = facc[b][1][m] = _mm256_setzero_ps();
    const uint8_t *wb = W + (int64_t)(b0 / JP_SB) * K * 8 * JP_SB + (b0 % JP_SB) * 64;
    const uint16_t *zb = sz + (int64_t)b0 * zs;
    for (int g = 0; g < ngroups; g++) {
        __m256i acc[4][2][4];
#pragma GCC unroll 4
        for (int b = 0; b < NB; b++)
#pragma GCC unroll 4
            for (int m = 0; m < M; m++) acc[b][0][m] = acc[b][1][m] = _mm256_setzero_si256();
        for (int k = g * G; k < (g + 1) * G; k += 8) {
            const uint8_t *wk = wb + (int64_t)k * 8 * JP_SB;
            __m256i x0[4], x1[4];
#pragma GCC unroll 4
            for (int m = 0; m < M; m++) {
                x0[m] = _mm256_set1_epi32(load4(xq + (int64_t)m * K + k));
                x1[m] = _mm256_set1_epi32(load4(xq + (int64_t)m * K + k + 4));
            }
#pragma GCC unroll 4
            for (int b = 0; b < NB; b++) {
#pragma GCC unroll 2
                for (int h = 0; h < 2; h++) {
                    if (JP_PF && h == 0) _mm_prefetch((const char *)(wk + b * 64 + JP_PF), _MM_HINT_T0);
                    __m256i v = _mm256_loadu_si256((const __m256i *)(wk + b * 64 + h * 32));
                    __m256i lo = _mm256_and_si256(v, low), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
#pragma GCC unroll 4
                    for (int m = 0; m < M; m++) {
                        __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo, x0[m]), _mm256_maddubs_epi16(hi, x1[m]));
                        acc[b][h][m] = _mm256_add_epi32(acc[b][h][m], _mm256_madd_epi16(p, ones));
                    }
                }
            }
        }
#pragma GCC unroll 4
        for (int b = 0; b < NB; b++) {
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                const uint16_t *zg = zb + b * zs + g * 32 + h * 8;
                __m256 s = bf16x8(zg), z = bf16x8(zg + 16);
#pragma GCC unroll 4
                for (int m = 0; m < M; m++) {
                    facc[b][h][m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[b][h][m]), s, facc[b][h][m]);
                    facc[b][h][m] = _mm256_fmadd_ps(_mm256_set1_ps((float)gsum[m * ngroups + g]), z, facc[b][h][m]);
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int b = 0; b < NB; b++) {
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            int n = (b0 + b) * 16 + h * 8;
            __m256 bv = bias ? load_rows(bias + n, N - n) : _mm256_setzero_ps();
#pragma GCC unroll 4
            for (int m = 0; m < M; m++)
                store_rows(y + m * ldy + n, N - n, _mm256_fmadd_ps(facc[b][h][m], _mm256_set1_ps(sx[m]), bv));
        }
    }
}

#define I4_CALL(MM, NBB)                                                                                         \
    for (int bg = 0; bg < JP_SB; bg += NBB)                                                                     \
        i4_blocks(MM, NBB, b + bg, N, K, G, W, sz, bias, q, sx + m0, gs, yy, ldy)

/* As i8_chunk: superblock by superblock, block groups of NB, tokens in pairs ((M, NB) = (2, 2): at 4-8 tokens
 * ~10 % faster than (4, 1) on the same shapes; int4's per-group fp32 accumulators double the registers). */
static void i4_chunk(int mc, int N, int K, int G, const uint8_t *W, const uint16_t *sz, const float *bias,
                     const int8_t *xq, const float *sx, const int32_t *gsum, float *y, int64_t ldy, int nt) {
    int nblk = (N + 16 * JP_SB - 1) / (16 * JP_SB) * JP_SB, ngroups = K / G;
    /* superblocks split over nt OpenMP threads: each output row is one thread's, computed exactly as
     * single-threaded, so the bits do not depend on the count */
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && nblk >= 2 * JP_SB)
    for (int b = 0; b < nblk; b += JP_SB) {
        for (int m0 = 0; m0 < mc;) {
            const int8_t *q = xq + (int64_t)m0 * K;
            const int32_t *gs = gsum + m0 * ngroups;
            float *yy = y + m0 * ldy;
            int left = mc - m0;
            if (left == 1) { I4_CALL(1, 4); m0 += 1; }
            else { I4_CALL(2, 2); m0 += 2; }
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
        quantize_rows(x + (int64_t)m0 * ldx, ldx, mc, K, K, G, xq, sx, gsum, NULL);
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
