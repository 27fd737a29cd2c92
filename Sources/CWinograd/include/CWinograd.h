#ifndef CWINOGRAD_H
#define CWINOGRAD_H

// Winograd F(m x m, 3 x 3) transforms (m = 2 or 4, tile alpha = m + 2) for 3x3, stride-1,
// padding-1 convolutions on oneDNN's nChw8c layout. The tile-wise products are batched matrix
// products that the caller runs with oneDNN's matmul; only the transforms live here.
//
// Transformed tiles are stored as alpha*alpha planes, each a row-major T x ld matrix: element
// (xi, t, c) at [xi * wino_plane(T, ld) + t * ld + c]. Tiles t run over images, then tile rows,
// then columns. Filters and weight-gradient sums are planes of the same kind (rows x ld).
// Each function splits its work over the OpenMP threads oneDNN uses.

// Floats from one plane to the next: a plane of rows x ld and 64 bytes more. Without the 64 bytes,
// the 36 planes a tile writes are often a multiple of 4 KiB apart, so its 36 stores fall into
// one cache set (measured: transforms 1.5-4x slower). The matmuls read the planes at this stride.
static inline long wino_plane(long rows, long ld) { return rows * ld + 16; }

// Input tiles (alpha x alpha, starting one pixel above and left of each output tile, zero
// outside) of images [n0, n0 + count) -> B^T d B. `ld` >= 8 * blocks.
void wino_input_transform(int m, const float *src, int n0, int count, int blocks, int height, int width,
                          float *tiles, long ld);

// Output-gradient tiles (m x m) of images [n0, n0 + count) -> A g A^T (alpha x alpha), the
// factor the weight gradient needs.
void wino_gradient_transform(int m, const float *src, int n0, int count, int blocks, int height, int width,
                             float *tiles, long ld);

// Products (alpha x alpha per tile) -> A^T M A, written as m x m output pixels of images
// [n0, n0 + count) (clipped at the image's edge).
void wino_output_transform(int m, const float *tiles, long ld, int n0, int count, int blocks, int height,
                           int width, float *dst);

// Filters of an O x C x 3 x 3 bank (oneDNN's blocked OIhw8i8o) -> G g G^T, planes
// [first, first + count) of the alpha*alpha (the rest are not stored), each a rowsPadded x ld
// matrix (zeros in the padding): rows are input channels, or, `transposed`, output channels with
// each filter rotated by 180 degrees (backward data convolves with the flipped, transposed
// filters). Position groups keep a wide layer's transformed filters to a fraction of their size.
void wino_filter_transform(int m, const float *weights, int inChannels, int outChannels, int transposed,
                           float *planes, int rowsPadded, long ld, int first, int count);

// Weight gradient: planes S of positions [first, first + count) (Cp x ld matrices, rows = input
// channels, columns = output channels) -> their part of G^T S G, written (or, `accumulate`,
// added) into the O x C x 3 x 3 gradient (OIhw8i8o; its padding is left as it is). The gradient
// is linear in S, so position groups add up to the whole.
void wino_weight_gradient(int m, const float *planes, int inChannels, int outChannels, int rowsPadded, long ld,
                          int first, int count, int accumulate, float *gradient);

#endif
