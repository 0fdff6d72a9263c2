/* Dual Focal Loss on float32 logits with integer labels, vectorised and
 * parallel with OpenMP: sigmoid mode on (N, C) rows (mmdet's dense heads) and
 * softmax mode on (B, C, S) maps (mmseg's decode heads, below). The maths is
 * that of dfl_mm/ops/reference.py (dual_focal_loss_elements), the reference it
 * is tested against:
 *
 *   u = +z (class == label) or -z,  sp = softplus(u),  s = gamma * sp
 *   loss = -ln(1 - exp(-s)),
 *   dloss/du = -gamma * sigmoid(u) * exp(-s) / (1 - exp(-s)),
 *   dloss/dgamma = -sp * exp(-s) / (1 - exp(-s)),  u < -30: -ln(gamma) - u, -1, -1/gamma
 *
 * exp(-s) and 1 - exp(-s) come from one inline exp (exp_parts), the
 * logarithm from an inline log that keeps losses of 1e-13 exact (log_parts);
 * softplus uses glibc's libmvec (SIMD expf/log1pf).
 * Element weight (sigmoid): row_weight[n] (optional) times pos_weight[c] where
 * class c is the row's label, else neg_weight[c] (class weights with alpha
 * folded in; ones by default). Rows whose label is ignore_index (when
 * has_ignore) contribute nothing.
 * Both branches of every select are evaluated (that is what vectorises); the
 * unselected one may be inf, never the result.
 *
 * Interface: every entry point is int dfl_<mode>_<pass>(const DflArgs *, DflOut *)
 * and returns a DflStatus; dfl_mm/ops/cpu.py mirrors the two structs once.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TAIL (-30.0f)
#define LN2 0.69314718055994531f
#define INLINE static inline __attribute__((always_inline))

#define LOG2E 1.44269504088896341f
#define LN2_HI 0.693359375f /* ln 2 = LN2_HI + LN2_LO, LN2_HI with 9 significant bits */
#define LN2_LO (-2.12194440e-4f)
#define ROUNDER 12582912.0f /* 1.5 * 2^23: (x + ROUNDER) - ROUNDER rounds x to an integer */
#define SQRT2 1.41421356f

/* One call's inputs. Sigmoid mode: (N, C) logits as batch = N, spatial = 1;
 * pos_weight / neg_weight are the class weights of the label's class and of
 * the others, alpha folded in. Softmax mode: (B, C, S) logits; pos_weight is
 * the class weight, neg_weight unused. */
typedef struct {
  const float *logits;     /* (B, C, S) */
  const int64_t *labels;   /* (B, S) */
  const float *row_weight; /* (B, S), or NULL */
  const float *pos_weight; /* (C,) */
  const float *neg_weight; /* (C,) */
  int64_t batch, classes, spatial;
  int64_t has_ignore, ignore_index;
  float gamma;
  float scale;   /* gradient passes: factor of every gradient written */
  float *grad;   /* gradient passes: (B, C, S) output */
  int32_t threads;
} DflArgs;

/* One call's scalar outputs: what the pass computes, NaN otherwise. */
typedef struct {
  double loss;       /* sum of the weighted element losses */
  double grad_gamma; /* d loss / d gamma (not times scale: the caller scales it in double) */
} DflOut;

typedef enum { DFL_OK = 0, DFL_NO_MEMORY = 1, DFL_BAD_ARGS = 2 } DflStatus;

/* The ABI handshake: the sizes of DflArgs and DflOut, then the offset of each of
 * their fields in order, into out[0 .. n). The loader (ops/cpu.py) compares them
 * with its ctypes mirrors before the first call; returns how many it knows. */
#define DFL_ABI_ENTRIES 18
int64_t dfl_abi(int64_t *out, int64_t n) {
  const int64_t abi[DFL_ABI_ENTRIES] = {
      (int64_t)sizeof(DflArgs), (int64_t)sizeof(DflOut),
      offsetof(DflArgs, logits), offsetof(DflArgs, labels), offsetof(DflArgs, row_weight),
      offsetof(DflArgs, pos_weight), offsetof(DflArgs, neg_weight), offsetof(DflArgs, batch),
      offsetof(DflArgs, classes), offsetof(DflArgs, spatial), offsetof(DflArgs, has_ignore),
      offsetof(DflArgs, ignore_index), offsetof(DflArgs, gamma), offsetof(DflArgs, scale),
      offsetof(DflArgs, grad), offsetof(DflArgs, threads),
      offsetof(DflOut, loss), offsetof(DflOut, grad_gamma)};
  for (int64_t i = 0; i < n && i < DFL_ABI_ENTRIES; i++) out[i] = abi[i];
  return DFL_ABI_ENTRIES;
}

typedef union { float f; int32_t i; } Bits;
INLINE float as_float(int32_t i) { return (Bits){.i = i}.f; }
INLINE int32_t as_int(float f) { return (Bits){.f = f}.i; }

/* exp(x) for x <= 0, and 1 - exp(x) to full relative precision in *one_minus
 * (0 and 1 below -87: no subnormals). Inline so the vector loops keep it:
 * x = n ln 2 + r with |r| <= ln2 / 2, e^r - 1 by its Taylor series to r^7
 * (truncation < 2^-26 relative), exp(x) = 2^n (1 + (e^r - 1)); for n = 0,
 * 1 - exp(x) = -(e^r - 1) without cancellation, else exp(x) <= 0.71. */
INLINE float exp_parts(float x, float *one_minus) {
  const int under = x < -87.0f; /* false for NaN, which stays NaN */
  const float xc = under ? -87.0f : x;
  const float n = (xc * LOG2E + ROUNDER) - ROUNDER;
  const float r = fmaf(-n, LN2_LO, fmaf(-n, LN2_HI, xc));
  float q = 1.0f / 5040.0f;
  q = fmaf(q, r, 1.0f / 720.0f);
  q = fmaf(q, r, 1.0f / 120.0f);
  q = fmaf(q, r, 1.0f / 24.0f);
  q = fmaf(q, r, 1.0f / 6.0f);
  q = fmaf(q, r, 0.5f);
  q = fmaf(q, r, 1.0f);
  const float em1 = q * r;
  const int32_t ni = n >= -126.0f && n <= 127.0f ? (int32_t)n : 0; /* NaN: any scale */
  const float scale = as_float((ni + 127) << 23);
  const float e = fmaf(scale, em1, scale);
  *one_minus = under ? 1.0f : (ni == 0 ? -em1 : 1.0f - e);
  return under ? 0.0f : e;
}

/* ln d for d in (0, 1], given e = 1 - d as well: near d = 1 the logarithm
 * uses -e, not the rounded d - 1, so a loss of 1e-13 keeps its digits; and
 * 1 / d in *inv_d, from the same division. d = 2^k (1 + f), f in [-0.29, 0.42];
 * ln(1 + f) = 2 atanh(t) with t = f / (2 + f), |t| <= 0.18, series to t^9
 * (truncation < 2^-28 relative). */
INLINE float log_parts(float d, float e, float *inv_d) {
  const int32_t bits = as_int(d);
  const float m = as_float((bits & 0x007fffff) | 0x3f800000); /* in [1, 2) */
  const int big = m > SQRT2;
  const int32_t k = (bits >> 23) - 127 + big;
  const float f = k == 0 ? -e : (big ? 0.5f * m : m) - 1.0f;
  const float r = 1.0f / (d * (2.0f + f));
  *inv_d = (2.0f + f) * r;
  const float t = f * d * r, t2 = t * t;
  float q = 1.0f / 9.0f;
  q = fmaf(q, t2, 1.0f / 7.0f);
  q = fmaf(q, t2, 1.0f / 5.0f);
  q = fmaf(q, t2, 1.0f / 3.0f);
  const float log1p_f = fmaf(2.0f * t * t2, q, 2.0f * t);
  const float kf = (float)k;
  const float result = fmaf(kf, LN2_HI, fmaf(kf, LN2_LO, log1p_f));
  return d == d ? result : d;
}

/* The element terms below take u, sp = softplus(u) = -ln e and, from one
 * exp_parts, exp_s = exp(-s) and one_minus = 1 - exp(-s) of s = gamma * sp. */

/* Element loss. */
INLINE float element_loss(float u, float exp_s, float one_minus, float log_gamma) {
  float unused;
  return u < TAIL ? -(log_gamma + u) : -log_parts(one_minus, exp_s, &unused);
}

/* d loss / d u and d loss / d gamma; sigmoid = sigmoid(u) = 1 - e. */
INLINE void element_grads(float u, float sp, float sigmoid, float gamma, float exp_s,
                          float one_minus, float *grad_u, float *grad_gamma) {
  const float ratio = exp_s == 0.0f ? 0.0f : -exp_s / one_minus; /* -exp(-s) / (1 - exp(-s)) */
  const int tail = u < TAIL;
  *grad_u = tail ? -1.0f : gamma * sigmoid * ratio;
  *grad_gamma = tail ? -1.0f / gamma : sp * ratio;
}

/* Sums are taken over CHUNKS chunks of consecutive rows (or pixel blocks), each
 * in order, and then over the chunks in order: bitwise the same for any number
 * of threads. */
#define CHUNKS 1024

/* The partial sums' chunk of ``count`` items: [*begin, *end) of chunk ``chunk``. */
INLINE void chunk_range(int64_t count, int64_t chunk, int64_t *begin, int64_t *end) {
  const int64_t per = (count + CHUNKS - 1) / CHUNKS;
  *begin = chunk * per < count ? chunk * per : count;
  *end = *begin + per < count ? *begin + per : count;
}

INLINE double sum_in_order(const double *part) {
  double total = 0.0;
  for (int64_t i = 0; i < CHUNKS; ++i) total += part[i];
  return total;
}

static inline float row_factor(const int64_t *labels, const float *row_weight,
                               int64_t has_ignore, int64_t ignore_index, int64_t n) {
  if (has_ignore && labels[n] == ignore_index) return 0.0f;
  return row_weight ? row_weight[n] : 1.0f;
}

static double sigmoid_forward(const float *logits, const int64_t *labels,
                              const float *row_weight, const float *pos_weight,
                              const float *neg_weight, int64_t has_ignore,
                              int64_t ignore_index, int64_t rows, int64_t classes, float gamma,
                              int threads) {
  const float log_gamma = logf(gamma);
  double part[CHUNKS] = {0.0};
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t chunk = 0; chunk < CHUNKS; ++chunk) {
    int64_t begin, end;
    chunk_range(rows, chunk, &begin, &end);
    double total = 0.0;
    for (int64_t n = begin; n < end; ++n) {
      const float w = row_factor(labels, row_weight, has_ignore, ignore_index, n);
      if (w == 0.0f) continue;
      const float *z = logits + n * classes;
      const int64_t label = labels[n];
      float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
      for (int64_t c = 0; c < classes; ++c) {
        const int pos = c == label;
        const float u = pos ? z[c] : -z[c];
        const float sp = (u > 0.0f ? u : 0.0f) + log1pf(expf(-fabsf(u)));
        const float factor = pos ? pos_weight[c] : neg_weight[c];
        float one_minus;
        const float exp_s = exp_parts(-gamma * sp, &one_minus);
        const float loss = element_loss(u, exp_s, one_minus, log_gamma);
        acc += factor == 0.0f ? 0.0f : factor * loss; /* exactly 0, even for a NaN logit */
      }
      total += (double)w * acc;
    }
    part[chunk] = total;
  }
  return sum_in_order(part);
}

/* Writes scale * d(sum of weighted losses)/d logits into grad (N, C) and
 * returns d(sum of weighted losses)/d gamma. */
static double sigmoid_backward(const float *logits, const int64_t *labels,
                               const float *row_weight, const float *pos_weight,
                               const float *neg_weight, int64_t has_ignore,
                               int64_t ignore_index, int64_t rows, int64_t classes,
                               float gamma, float scale, float *grad, int threads) {
  double part[CHUNKS] = {0.0};
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t chunk = 0; chunk < CHUNKS; ++chunk) {
    int64_t begin, end;
    chunk_range(rows, chunk, &begin, &end);
    double total = 0.0;
    for (int64_t n = begin; n < end; ++n) {
      const float w = row_factor(labels, row_weight, has_ignore, ignore_index, n);
      const float *z = logits + n * classes;
      float *g = grad + n * classes;
      if (w == 0.0f) { /* ignored or zero-weight row: no gradient, whatever its logits */
        memset(g, 0, sizeof(float) * classes);
        continue;
      }
      const int64_t label = labels[n];
      float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
      for (int64_t c = 0; c < classes; ++c) {
        const int pos = c == label;
        const float sign = pos ? 1.0f : -1.0f;
        const float u = sign * z[c];
        const float t = expf(-fabsf(u));
        const float sp = (u > 0.0f ? u : 0.0f) + log1pf(t);
        const float sigmoid = (u >= 0.0f ? 1.0f : t) / (1.0f + t);
        const float factor = w * (pos ? pos_weight[c] : neg_weight[c]);
        float grad_u, grad_gamma;
        float one_minus;
        const float exp_s = exp_parts(-gamma * sp, &one_minus);
        element_grads(u, sp, sigmoid, gamma, exp_s, one_minus, &grad_u, &grad_gamma);
        g[c] = factor == 0.0f ? 0.0f : scale * factor * sign * grad_u;
        acc += factor == 0.0f ? 0.0f : factor * grad_gamma;
      }
      total += acc;
    }
    part[chunk] = total;
  }
  return sum_in_order(part);
}

/* ------------------------------------------------------------------ softmax
 * (B, C, S) float32 logits, labels (B, S), vectorised over the pixels of a
 * block of BLOCK; the maths of _softmax_chunk in dfl_mm/ops/reference.py: every class
 * is a sigmoid element of its log-odds v_c = ln p_c - ln(1 - p_c), and
 *
 *   d loss / d z_j = h_j - p_j K - pi_j g_m,   h_c = w_c p_c d loss_c / d p_c,
 *   K = sum_{c != m} h_c,  g_m = h_m (1 - p_m),  pi_j = p_j / (1 - p_m)
 *
 * (m the pixel's argmax; h_m is never formed). Only two classes of a pixel
 * need the log-odds form: the argmax (the one class that can have p > 1/2,
 * where 1 - p cancels; its ln(1 - p) comes from the logsumexp of the rest)
 * and the label. Every other class is a negative with p <= 1/2 whose terms
 * follow from ln p = z - lse alone, one exp and one log per element:
 *
 *   E = p^gamma = exp(gamma ln p),  D = 1 - E,  loss = -ln D,
 *   h = w gamma E / D,  d loss / d gamma = w ln p E / D.
 *
 * p_c and pi_c reuse the exp(z_c - m2) of the normaliser (m2: the largest
 * logit but the argmax's). Element weight: weight[b, s] (optional; 0 for
 * ignored pixels) * class_weight[c]. Sums: per block, then per chunk of
 * blocks (CHUNKS, above), all in a fixed order.
 */
/* pixels per block: its 3 x C x BLOCK floats of scratch stay in L1 / L2
 * (150 classes: 2x faster than 64 pixels; 19 classes: the same) */
#define BLOCK 32
#define PREFETCH_AHEAD 8 /* blocks: ~5 % faster at 2 x 19 x 256 x 512 than none */
/* What every block of one call shares. */
typedef struct {
  const float *logits, *weight, *class_weight;
  const int64_t *labels;
  int64_t has_ignore, ignore_index, classes, spatial;
  float gamma, log_gamma, scale, class_weight_max; /* the largest |class_weight| */
  float *grad;
} Softmax;

/* Per-pixel statistics of one block, and the terms of its argmax and label
 * elements (the two in log-odds form). */
typedef struct {
  float lse[BLOCK], w[BLOCK];
  float p_rest[BLOCK];   /* p_c = exp(z_c - m2) * p_rest: exp(m2 - lse) */
  float pi_rest[BLOCK];  /* pi_c = exp(z_c - m2) * pi_rest: 1 / sum_{c != m} exp(z_c - m2) */
  float p_max[BLOCK];
  float g_max[BLOCK];    /* g_m */
  float h_label[BLOCK];  /* h_y of a label that is not the argmax, else 0 */
  float loss[BLOCK], grad_gamma[BLOCK]; /* of the argmax and label elements */
  int32_t argmax[BLOCK], label[BLOCK]; /* label: -1 when not a class */
  int32_t active[BLOCK]; /* some w * class_weight[c] != 0: w * max |class_weight| != 0 */
} PixelStats;

/* The log-odds terms of one element: loss, and d loss / d v and d loss / d gamma
 * weighted by ``factor`` (exactly 0 where it is 0); u = +-v, sp = softplus(u),
 * sigmoid = sigmoid(u). */
INLINE void logodds_element(float u, float sp, float sigmoid, float sign, float factor,
                            float gamma, float log_gamma, float *loss, float *grad_v,
                            float *grad_gamma) {
  float grad_u, gg;
  float one_minus;
  const float exp_s = exp_parts(-gamma * sp, &one_minus);
  element_grads(u, sp, sigmoid, gamma, exp_s, one_minus, &grad_u, &gg);
  const float l = element_loss(u, exp_s, one_minus, log_gamma);
  const int counts = factor != 0.0f;
  *loss = counts ? factor * l : 0.0f;
  *grad_v = counts ? factor * sign * grad_u : 0.0f;
  *grad_gamma = counts ? factor * gg : 0.0f;
}

/* Statistics of the ``len`` pixels of image b from s0 on. Scratch of
 * classes x BLOCK floats: ``zs`` receives the block's logits (the classes of
 * a block lie S floats apart, a power of two for most maps: read in place,
 * every pass would miss each cache level on set conflicts), ``ez``
 * exp(z_c - m2), 0 for the argmax. */
INLINE void pixel_stats(const Softmax *a, int64_t b, int64_t s0, const int64_t len, float *zs,
                        float *ez, PixelStats *st) {
  const int64_t classes = a->classes, spatial = a->spatial;
  float zmax[BLOCK], m2[BLOCK], rest[BLOCK];
  const int64_t base = b * spatial + s0;
  for (int64_t k = 0; k < len; ++k) {
    const int64_t label = a->labels[base + k];
    const float w = a->weight ? a->weight[base + k] : 1.0f;
    st->w[k] = (a->has_ignore && label == a->ignore_index) ? 0.0f : w;
    st->active[k] = st->w[k] != 0.0f && st->w[k] * a->class_weight_max != 0.0f;
    st->label[k] = label >= 0 && label < classes ? (int32_t)label : -1;
    zmax[k] = -INFINITY; m2[k] = -INFINITY; st->argmax[k] = 0;
    rest[k] = 0.0f;
  }
  const float *zb = a->logits + b * classes * spatial + s0;
  for (int32_t c = 0; c < classes; ++c) {
    const float *zc = zb + c * spatial;
    float *zsc = zs + c * BLOCK;
    /* C strided rows: more streams than the hardware prefetcher follows */
    for (int64_t line = 0; line < BLOCK; line += 16)
      __builtin_prefetch(zc + PREFETCH_AHEAD * BLOCK + line);
#pragma omp simd
    for (int64_t k = 0; k < len; ++k) {
      const float v = zc[k];
      zsc[k] = v;
      const int bigger = v > zmax[k];
      m2[k] = bigger ? zmax[k] : (v > m2[k] ? v : m2[k]);
      st->argmax[k] = bigger ? c : st->argmax[k];
      zmax[k] = bigger ? v : zmax[k];
    }
  }
  for (int32_t c = 0; c < classes; ++c) {
    const float *zc = zs + c * BLOCK;
    float *ezc = ez + c * BLOCK;
#pragma omp simd
    for (int64_t k = 0; k < len; ++k) {
      float unused;
      const float e = exp_parts(zc[k] - m2[k], &unused);
      ezc[k] = c == st->argmax[k] ? 0.0f : e;
      rest[k] += ezc[k];
    }
  }
  const float gamma = a->gamma, log_gamma = a->log_gamma;
#pragma omp simd
  for (int64_t k = 0; k < len; ++k) {
    /* lse = zmax + ln(1 + rest exp(m2 - zmax)): d = ln(rest) + m2 - zmax is the
     * argmax's log-odds, negated; a +inf logit: NaN, not a finite loss with
     * NaN gradients */
    const float d = m2[k] + logf(rest[k]) - zmax[k];
    float unused;
    const float t = exp_parts(-fabsf(d), &unused), log1p_t = log1pf(t); /* e^-|d| */
    const float neg_log_pmax = (d > 0.0f ? d : 0.0f) + log1p_t;     /* softplus(d) */
    const float lse = zmax[k] == INFINITY ? NAN : zmax[k] + neg_log_pmax;
    st->lse[k] = lse;
    st->p_rest[k] = exp_parts(m2[k] - lse, &unused);
    st->pi_rest[k] = 1.0f / rest[k];
    st->p_max[k] = (d > 0.0f ? t : 1.0f) / (1.0f + t); /* sigmoid(-d) */
    const int32_t m = st->argmax[k], y = st->label[k];
    const float w = st->w[k];
    /* the argmax: v = -d, a positive when it is the label; softplus(+-d) and
     * sigmoid(+-d) from the same e^-|d| */
    const float sign = y == m ? 1.0f : -1.0f, u = -sign * d;
    const float sp = (u > 0.0f ? u : 0.0f) + log1p_t;
    const float sig = (u >= 0.0f ? 1.0f : t) / (1.0f + t);
    float loss_m, g_m, gg_m;
    logodds_element(u, sp, sig, sign, w * a->class_weight[m], gamma, log_gamma, &loss_m,
                    &g_m, &gg_m);
    /* the label when it is not the argmax: p <= 1/2, v = ln p - ln(1 - p) */
    const int other = (y >= 0) & (y != m);
    const int32_t yc = other ? y : 0;
    const float log_p = zs[yc * BLOCK + k] - lse;
    float one_minus_p, inv;
    const float p = exp_parts(log_p, &one_minus_p);
    const float log_1mp = log_parts(one_minus_p, p, &inv);
    float loss_y, gv_y, gg_y;
    logodds_element(log_p - log_1mp, -log_1mp, p, 1.0f,
                    other ? w * a->class_weight[yc] : 0.0f, gamma, log_gamma, &loss_y, &gv_y,
                    &gg_y);
    st->g_max[k] = g_m;
    st->h_label[k] = gv_y == 0.0f ? 0.0f : gv_y * inv; /* / (1 - p) */
    st->loss[k] = loss_m + loss_y;
    st->grad_gamma[k] = gg_m + gg_y;
  }
}

/* One block: its loss sum into *loss, d / d gamma into *grad_gamma, and
 * scale * d / d logits into a->grad (with_loss, with_grad and, for full
 * blocks, len are compile-time). */
INLINE void softmax_block(const Softmax *a, int64_t b, int64_t s0, const int64_t len,
                          const int with_loss, const int with_grad, float *zs, float *ez,
                          float *h, float *loss, float *grad_gamma) {
  const int64_t classes = a->classes, spatial = a->spatial;
  const float gamma = a->gamma;
  PixelStats st;
  pixel_stats(a, b, s0, len, zs, ez, &st);
  float k_sum[BLOCK];
  float acc = 0.0f, lacc = 0.0f;
  for (int64_t k = 0; k < len; ++k) {
    k_sum[k] = st.h_label[k];
    acc += st.grad_gamma[k];
    lacc += st.loss[k];
  }
  for (int32_t c = 0; c < classes; ++c) {
    const float *zc = zs + c * BLOCK;
    const float cw = a->class_weight[c];
    float *hc = with_grad ? h + c * BLOCK : NULL;
#pragma omp simd reduction(+ : acc, lacc)
    for (int64_t k = 0; k < len; ++k) {
      const int is_label = c == st.label[k];
      const float factor = st.w[k] * cw;
      const int counts = (c != st.argmax[k]) & !is_label & (factor != 0.0f);
      const float log_p = zc[k] - st.lse[k];
      float d, inv_d;
      const float e = exp_parts(gamma * log_p, &d);
      if (with_loss) {
        lacc += counts ? -factor * log_parts(d, e, &inv_d) : 0.0f;
      } else {
        inv_d = 1.0f / d;
      }
      if (with_grad) {
        const float ratio = e == 0.0f ? 0.0f : e * inv_d; /* e / d; 0 for a -inf logit */
        acc += counts ? factor * log_p * ratio : 0.0f;
        const float hk = counts ? factor * gamma * ratio : 0.0f;
        hc[k] = is_label ? st.h_label[k] : hk;
        k_sum[k] += hk;
      }
    }
  }
  if (with_grad) {
    const float scale = a->scale;
    float *gb = a->grad + b * classes * spatial + s0;
    for (int32_t c = 0; c < classes; ++c) {
      const float *ezc = ez + c * BLOCK, *hc = h + c * BLOCK;
      float *restrict gc = gb + c * spatial;
#pragma omp simd
      for (int64_t k = 0; k < len; ++k) {
        const float g_max = st.g_max[k] - st.p_max[k] * k_sum[k];
        const float g = hc[k] - ezc[k] * (st.p_rest[k] * k_sum[k] + st.pi_rest[k] * st.g_max[k]);
        gc[k] = st.active[k] ? scale * (c == st.argmax[k] ? g_max : g) : 0.0f;
      }
    }
  }
  *loss = lacc;
  *grad_gamma = acc;
}

/* The work of the three entry points (with_loss, with_grad compile-time): the
 * loss sum into *loss, d / d gamma into *grad_gamma. *failed is set when the
 * per-thread scratch can not be allocated. */
INLINE void softmax_run(const Softmax *args, int64_t batch, int threads, int *failed,
                        const int with_loss, const int with_grad, double *loss,
                        double *grad_gamma) {
  const int64_t classes = args->classes, spatial = args->spatial;
  const int64_t blocks = (spatial + BLOCK - 1) / BLOCK, jobs = batch * blocks;
  double loss_part[CHUNKS] = {0.0}, gg_part[CHUNKS] = {0.0};
  *failed = 0;
  /* class ids are int32; scratch of one block per thread must fit size_t */
  if (classes < 0 || classes > INT32_MAX ||
      (uint64_t)classes > SIZE_MAX / (sizeof(float) * BLOCK)) {
    *failed = 1;
    return;
  }
  const size_t scratch = sizeof(float) * (size_t)classes * BLOCK;
  Softmax call = *args;
  for (int64_t c = 0; c < (jobs > 0 ? classes : 0); ++c)
    if (fabsf(call.class_weight[c]) > call.class_weight_max)
      call.class_weight_max = fabsf(call.class_weight[c]);
  const Softmax *a = &call;
#pragma omp parallel num_threads(threads)
  {
    /* z_c, exp(z_c - m2) and h_c of one block, kept between the passes */
    float *zs = malloc(scratch);
    float *ez = malloc(scratch);
    float *h = with_grad ? malloc(scratch) : NULL;
    const int ok = zs != NULL && ez != NULL && (!with_grad || h != NULL);
    if (!ok) {
#pragma omp atomic write
      *failed = 1;
    }
    /* every thread must reach the worksharing loop: it skips the chunks instead */
#pragma omp for schedule(static)
    for (int64_t chunk = 0; chunk < CHUNKS; ++chunk) {
      int64_t begin, end;
      chunk_range(jobs, chunk, &begin, &end);
      double chunk_loss = 0.0, chunk_gg = 0.0;
      for (int64_t job = begin; ok && job < end; ++job) {
        /* pixels [s0, s0 + BLOCK) of image b; an image's last block may be short */
        const int64_t b = job / blocks, s0 = (job % blocks) * BLOCK;
        float block_loss = 0.0f, block_gg = 0.0f;
        /* literal flags and length: the variables would be runtime values in the
         * function OpenMP outlines, and each loop would test them per vector
         * (and mask its stores) */
#define BLOCK_WITH(len, loss, grad) \
  softmax_block(a, b, s0, len, loss, grad, zs, ez, h, &block_loss, &block_gg)
        if (spatial - s0 >= BLOCK) {
          if (with_loss && with_grad) BLOCK_WITH(BLOCK, 1, 1);
          else if (with_loss) BLOCK_WITH(BLOCK, 1, 0);
          else BLOCK_WITH(BLOCK, 0, 1);
        } else {
          if (with_loss && with_grad) BLOCK_WITH(spatial - s0, 1, 1);
          else if (with_loss) BLOCK_WITH(spatial - s0, 1, 0);
          else BLOCK_WITH(spatial - s0, 0, 1);
        }
#undef BLOCK_WITH
        chunk_loss += block_loss;
        chunk_gg += block_gg;
      }
      loss_part[chunk] = chunk_loss;
      gg_part[chunk] = chunk_gg;
    }
    free(zs);
    free(ez);
    free(h);
  }
  if (with_loss) *loss = sum_in_order(loss_part);
  if (with_grad) *grad_gamma = sum_in_order(gg_part);
}

/* Arguments no pass can use (pointers are checked where there are pixels:
 * an empty tensor may have none). */
static int bad_args(const DflArgs *a, int with_grad) {
  if (a == NULL || a->batch < 0 || a->classes < 1 || a->spatial < 0 || a->threads < 1 ||
      a->pos_weight == NULL)
    return 1;
  const int work = a->batch > 0 && a->spatial > 0;
  return work && (a->logits == NULL || a->labels == NULL || (with_grad && a->grad == NULL));
}

int dfl_sigmoid_forward(const DflArgs *a, DflOut *out) {
  if (bad_args(a, 0) || a->neg_weight == NULL || a->spatial != 1 || out == NULL)
    return DFL_BAD_ARGS;
  out->grad_gamma = NAN;
  out->loss = sigmoid_forward(a->logits, a->labels, a->row_weight, a->pos_weight,
                              a->neg_weight, a->has_ignore, a->ignore_index, a->batch,
                              a->classes, a->gamma, a->threads);
  return DFL_OK;
}

/* Writes scale * d(sum of weighted losses)/d logits into a->grad (N, C). */
int dfl_sigmoid_backward(const DflArgs *a, DflOut *out) {
  if (bad_args(a, 1) || a->neg_weight == NULL || a->spatial != 1 || out == NULL)
    return DFL_BAD_ARGS;
  out->loss = NAN;
  out->grad_gamma = sigmoid_backward(a->logits, a->labels, a->row_weight, a->pos_weight,
                                     a->neg_weight, a->has_ignore, a->ignore_index, a->batch,
                                     a->classes, a->gamma, a->scale, a->grad, a->threads);
  return DFL_OK;
}

/* The softmax passes: with_loss / with_grad select forward, backward or both in
 * one pass (about 1.5x faster than the two, for one kept copy of the gradient).
 * Inlined into each entry point, so the flags stay literals down to softmax_run
 * (as runtime values, the loops OpenMP outlines would test them per vector). */
INLINE int softmax_entry(const DflArgs *in, DflOut *out, const int with_loss,
                         const int with_grad) {
  if (bad_args(in, with_grad) || out == NULL) return DFL_BAD_ARGS;
  const Softmax a = {in->logits, in->row_weight, in->pos_weight, in->labels, in->has_ignore,
                     in->ignore_index, in->classes, in->spatial, in->gamma, logf(in->gamma),
                     with_grad ? in->scale : 1.0f, 0.0f, with_grad ? in->grad : NULL};
  double loss = NAN, grad_gamma = NAN;
  int failed = 0;
  softmax_run(&a, in->batch, in->threads, &failed, with_loss, with_grad, &loss, &grad_gamma);
  out->loss = loss;
  out->grad_gamma = grad_gamma;
  return failed ? DFL_NO_MEMORY : DFL_OK;
}

int dfl_softmax_forward(const DflArgs *a, DflOut *out) { return softmax_entry(a, out, 1, 0); }

/* Writes scale * d(sum of weighted losses)/d logits into a->grad (B, C, S). */
int dfl_softmax_backward(const DflArgs *a, DflOut *out) { return softmax_entry(a, out, 0, 1); }

int dfl_softmax_forward_backward(const DflArgs *a, DflOut *out) {
  return softmax_entry(a, out, 1, 1);
}
