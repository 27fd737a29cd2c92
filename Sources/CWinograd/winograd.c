// Winograd F(m x m, 3 x 3) transforms on nChw8c data: every pixel's 8-channel block is one
// AVX2 vector, so each transform is a handful of vector additions per tile. Written in C
// because Swift has no portable way to pin these loops to AVX2 and to run them on the OpenMP
// threads oneDNN already keeps (a second thread pool would fight it for the same cores).
#include "CWinograd.h"
#include <immintrin.h>
#include <string.h>

#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)

typedef float v8 __attribute__((vector_size(32)));
#define INLINE static inline __attribute__((always_inline))
#define UNROLL _Pragma("clang loop unroll(full)")

// libgomp's entry point for `#pragma omp parallel` (what GCC emits); oneDNN here runs on libgomp.
void GOMP_parallel(void (*fn)(void *), void *data, unsigned threads, unsigned flags);
int omp_get_thread_num(void);
int omp_get_num_threads(void);

typedef void (*item_fn)(const void *context, long item);
struct job { item_fn fn; const void *context; long items; };

static void run_share(void *p) {
    const struct job *j = p;
    long threads = omp_get_num_threads(), id = omp_get_thread_num();
    long begin = j->items * id / threads, end = j->items * (id + 1) / threads;
    for (long i = begin; i < end; i++) j->fn(j->context, i);
}

static void parallel(item_fn fn, const void *context, long items) {
    struct job j = {fn, context, items};
    GOMP_parallel(run_share, &j, 0, 0);
}

// Lavin and Gray's matrices (points 0, 1, -1 for m = 2; 0, +-1, +-2 for m = 4; and infinity).
static const float BT2[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
static const float G2[4][3] = {{1, 0, 0}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0, 0, 1}};
static const float AT2[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
static const float BT4[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
static const float G4[6][3] = {{1.0f / 4, 0, 0},
                               {-1.0f / 6, -1.0f / 6, -1.0f / 6},
                               {-1.0f / 6, 1.0f / 6, -1.0f / 6},
                               {1.0f / 24, 1.0f / 12, 1.0f / 6},
                               {1.0f / 24, -1.0f / 12, 1.0f / 6},
                               {0, 0, 1}};
static const float AT4[4][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};

// sum over k of L(r, k) x[k * step], L's element (r, k) at L[r * lr + k * lc]. Inlined with
// constant matrices, the zero terms vanish and the loops unroll.
INLINE v8 combine(const float *L, int lr, int lc, int r, int S, const v8 *x, int step) {
    v8 acc = {0};
    int first = 1;
    UNROLL for (int k = 0; k < S; k++) {
        float c = L[r * lr + k * lc];
        if (c == 0) continue;
        acc = first ? c * x[k * step] : acc + c * x[k * step];
        first = 0;
    }
    return acc;
}

// out (R x R) = L in L^T for in (S x S) and L (R x S).
INLINE void sandwich(const float *L, int lr, int lc, int R, int S, const v8 *in, v8 *out) {
    v8 tmp[36];
    UNROLL for (int r = 0; r < R; r++) UNROLL for (int s = 0; s < S; s++) tmp[r * S + s] = combine(L, lr, lc, r, S, in + s, S);
    UNROLL for (int r = 0; r < R; r++) UNROLL for (int q = 0; q < R; q++) out[r * R + q] = combine(L, lr, lc, q, S, tmp + r * S, 1);
}

INLINE v8 load(const float *p) { v8 v; memcpy(&v, p, sizeof v); return v; }
INLINE void store(float *p, v8 v) { memcpy(p, &v, sizeof v); }

struct tiles {
    const float *src;
    float *dst;
    long ld, count;  // count: tiles of the chunk (the planes' row count)
    int n0, blocks, height, width, tilesH, tilesW;
};

// Work item `item` (a row of tiles) -> its image n, tile row ty, and first tile t0 of the chunk.
INLINE void locate_row(const struct tiles *c, long item, int *n, int *ty, long *t0) {
    *n = c->n0 + (int)(item / c->tilesH);
    *ty = (int)(item % c->tilesH);
    *t0 = (item / c->tilesH) * c->tilesH * c->tilesW + (long)*ty * c->tilesW;
}

// One row of tiles (ty) of one image, every block: each tile's S x S patch at
// (ty m + offset, tx m + offset) -> L d L^T, alpha x alpha. A row per item, blocks then tiles
// inside it, so the reads stream along image rows and each plane's writes for the row are contiguous.
INLINE void tiles_in(const struct tiles *c, long item, int m, int S, int offset, const float *L, int lr, int lc) {
    int n, ty;
    long t0;
    locate_row(c, item, &n, &ty, &t0);
    int R = m + 2, y0 = ty * m + offset;
    long plane = wino_plane(c->count, c->ld), rowStride = (long)c->width * 8;
    int rowsInside = y0 >= 0 && y0 + S <= c->height;
    for (int block = 0; block < c->blocks; block++) {
        const float *image = c->src + ((long)n * c->blocks + block) * c->height * c->width * 8;
        // The next block's S rows: each is a short stream (width x 32 bytes) that the hardware
        // prefetcher learns too late (measured: the transform 1.4-1.7x faster with this).
        if (block + 1 < c->blocks) {
            const char *next = (const char *)(image + (long)c->height * c->width * 8);
            for (int i = 0; i < S; i++) {
                if (y0 + i < 0 || y0 + i >= c->height) continue;
                const char *row = next + (long)(y0 + i) * rowStride * 4;
                for (long b = 0; b < rowStride * 4; b += 64) __builtin_prefetch(row + b);
            }
        }
        for (int tx = 0; tx < c->tilesW; tx++) {
            v8 in[36], out[36];
            int x0 = tx * m + offset;
            if (rowsInside && x0 >= 0 && x0 + S <= c->width) {
                const float *corner = image + ((long)y0 * c->width + x0) * 8;
                UNROLL for (int i = 0; i < S; i++) UNROLL for (int j = 0; j < S; j++)
                    in[i * S + j] = load(corner + i * rowStride + j * 8);
            } else {
                UNROLL for (int i = 0; i < S; i++) UNROLL for (int j = 0; j < S; j++) {
                    int y = y0 + i, x = x0 + j;
                    in[i * S + j] = (y >= 0 && y < c->height && x >= 0 && x < c->width)
                        ? load(image + ((long)y * c->width + x) * 8) : (v8){0};
                }
            }
            sandwich(L, lr, lc, R, S, in, out);
            float *dst = c->dst + (t0 + tx) * c->ld + block * 8;
            UNROLL for (int xi = 0; xi < R * R; xi++) store(dst + xi * plane, out[xi]);
        }
    }
}

static void input2(const void *c, long i) { tiles_in(c, i, 2, 4, -1, &BT2[0][0], 4, 1); }
static void input4(const void *c, long i) { tiles_in(c, i, 4, 6, -1, &BT4[0][0], 6, 1); }
// A is AT transposed: element (r, k) of A is AT[k][r].
static void gradient2(const void *c, long i) { tiles_in(c, i, 2, 2, 0, &AT2[0][0], 1, 4); }
static void gradient4(const void *c, long i) { tiles_in(c, i, 4, 4, 0, &AT4[0][0], 1, 6); }

// One row of tiles of one image, every block: alpha x alpha products -> A^T M A, m x m pixels
// (clipped at the edges).
INLINE void tiles_out(const struct tiles *c, long item, int m, const float *AT) {
    int n, ty;
    long t0;
    locate_row(c, item, &n, &ty, &t0);
    const int S = m + 2;
    long plane = wino_plane(c->count, c->ld), rowStride = (long)c->width * 8;
    int rows = c->height - ty * m < m ? c->height - ty * m : m;
    for (int block = 0; block < c->blocks; block++) {
        float *image = c->dst + ((long)n * c->blocks + block) * c->height * c->width * 8;
        for (int tx = 0; tx < c->tilesW; tx++) {
            v8 in[36], out[16];
            const float *src = c->src + (t0 + tx) * c->ld + block * 8;
            UNROLL for (int xi = 0; xi < S * S; xi++) in[xi] = load(src + xi * plane);
            sandwich(AT, S, 1, m, S, in, out);
            float *corner = image + ((long)ty * m * c->width + tx * m) * 8;
            if (rows == m && tx * m + m <= c->width) {
                UNROLL for (int i = 0; i < m; i++) UNROLL for (int j = 0; j < m; j++)
                    store(corner + i * rowStride + j * 8, out[i * m + j]);
            } else {
                UNROLL for (int i = 0; i < m; i++) UNROLL for (int j = 0; j < m; j++)
                    if (i < rows && tx * m + j < c->width) store(corner + i * rowStride + j * 8, out[i * m + j]);
            }
        }
    }
}

static void output2(const void *c, long i) { tiles_out(c, i, 2, &AT2[0][0]); }
static void output4(const void *c, long i) { tiles_out(c, i, 4, &AT4[0][0]); }

static void run_tiles(item_fn fn, const float *src, float *dst, long ld, int m, int n0, int count, int blocks,
                      int height, int width) {
    struct tiles c = {src, dst, ld, 0, n0, blocks, height, width, (height + m - 1) / m, (width + m - 1) / m};
    c.count = (long)count * c.tilesH * c.tilesW;
    parallel(fn, &c, (long)count * c.tilesH);
}

void wino_input_transform(int m, const float *src, int n0, int count, int blocks, int height, int width,
                          float *tiles, long ld) {
    run_tiles(m == 2 ? input2 : input4, src, tiles, ld, m, n0, count, blocks, height, width);
}

void wino_gradient_transform(int m, const float *src, int n0, int count, int blocks, int height, int width,
                             float *tiles, long ld) {
    run_tiles(m == 2 ? gradient2 : gradient4, src, tiles, ld, m, n0, count, blocks, height, width);
}

void wino_output_transform(int m, const float *tiles, long ld, int n0, int count, int blocks, int height,
                           int width, float *dst) {
    run_tiles(m == 2 ? output2 : output4, tiles, dst, ld, m, n0, count, blocks, height, width);
}

// Where weight (o, c, k) of an O x C x 3 x 3 filter bank is in oneDNN's blocked OIhw8i8o (the
// layout its AVX2 direct kernels keep the weights in, so that both kernels share it).
INLINE long offset(int inChannels, int o, int c, int k) {
    long inBlocks = (inChannels + 7) / 8;
    return (((long)(o / 8) * inBlocks + c / 8) * 9 + k) * 64 + (c % 8) * 8 + o % 8;
}

struct filters {
    const float *weights;
    float *planes;
    long ld;
    int inChannels, rows, columns, transposed, rowsPadded, first, count;
};

// One row and 8 columns of filters -> G g G^T; padding rows and columns become zeros. In
// OIhw8i8o a row's 8 columns are one vector (forward) or 8 floats 8 apart (transposed: a gather).
INLINE void filter(const struct filters *c, long item, int m, const float *G) {
    const int R = m + 2;
    long blocks = c->ld / 8;
    int r = (int)(item / blocks), b = (int)(item % blocks);
    v8 in[9] = {{0}}, out[36];
    if (r < c->rows) {
        if (c->transposed) {
            // Rows are output channels, columns input channels, each filter rotated (backward data).
            const __m256i lanes = _mm256_setr_epi32(0, 8, 16, 24, 32, 40, 48, 56);
            UNROLL for (int k = 0; k < 9; k++)
                in[k] = (v8)_mm256_i32gather_ps(c->weights + offset(c->inChannels, r, b * 8, 8 - k), lanes, 4);
        } else {
            UNROLL for (int k = 0; k < 9; k++) in[k] = load(c->weights + offset(c->inChannels, b * 8, r, k));
        }
        // Columns past the last channel: the weights' block padding, kept out of the products.
        for (int l = c->columns - b * 8; l < 8; l++) UNROLL for (int k = 0; k < 9; k++) in[k][l] = 0;
    }
    sandwich(G, 3, 1, R, 3, in, out);
    float *dst = c->planes + (long)r * c->ld + b * 8;
    long plane = wino_plane(c->rowsPadded, c->ld);
    UNROLL for (int xi = 0; xi < R * R; xi++)
        if (xi >= c->first && xi < c->first + c->count) store(dst + (xi - c->first) * plane, out[xi]);
}

static void filter2(const void *c, long i) { filter(c, i, 2, &G2[0][0]); }
static void filter4(const void *c, long i) { filter(c, i, 4, &G4[0][0]); }

void wino_filter_transform(int m, const float *weights, int inChannels, int outChannels, int transposed,
                           float *planes, int rowsPadded, long ld, int first, int count) {
    struct filters c = {weights, planes, ld, inChannels, transposed ? outChannels : inChannels,
                        transposed ? inChannels : outChannels, transposed, rowsPadded, first, count};
    parallel(m == 2 ? filter2 : filter4, &c, (long)rowsPadded * (ld / 8));
}

struct gradients {
    const float *planes;
    float *gradient;
    long ld;
    int inChannels, outChannels, rowsPadded, first, count, accumulate;
};

// G^T S G for one input channel and 8 output channels; G^T's element (r, k) is G[k][r].
INLINE void weight_gradient(const struct gradients *c, long item, int m, const float *G) {
    const int S = m + 2;
    long blocks = c->ld / 8;
    int ci = (int)(item / blocks), b = (int)(item % blocks);
    v8 in[36], out[9];
    const float *src = c->planes + (long)ci * c->ld + b * 8;
    long plane = wino_plane(c->rowsPadded, c->ld);
    UNROLL for (int xi = 0; xi < S * S; xi++)
        in[xi] = xi >= c->first && xi < c->first + c->count ? load(src + (xi - c->first) * plane) : (v8){0};
    sandwich(G, 1, 3, 3, S, in, out);
    for (int l = 0; l < 8; l++) {
        int o = b * 8 + l;
        if (o >= c->outChannels) break;
        if (c->accumulate) {
            UNROLL for (int k = 0; k < 9; k++) c->gradient[offset(c->inChannels, o, ci, k)] += out[k][l];
        } else {
            UNROLL for (int k = 0; k < 9; k++) c->gradient[offset(c->inChannels, o, ci, k)] = out[k][l];
        }
    }
}

static void weightGradient2(const void *c, long i) { weight_gradient(c, i, 2, &G2[0][0]); }
static void weightGradient4(const void *c, long i) { weight_gradient(c, i, 4, &G4[0][0]); }

void wino_weight_gradient(int m, const float *planes, int inChannels, int outChannels, int rowsPadded, long ld,
                          int first, int count, int accumulate, float *gradient) {
    struct gradients c = {planes, gradient, ld, inChannels, outChannels, rowsPadded, first, count, accumulate};
    parallel(m == 2 ? weightGradient2 : weightGradient4, &c, (long)inChannels * (ld / 8));
}

#pragma clang attribute pop
