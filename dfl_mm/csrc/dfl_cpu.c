/* Dual Focal Loss, sigmoid mode, (N, C) float32 logits with integer labels:
 * the loss sum and its gradients in one pass each, vectorised over classes
 * (glibc's libmvec supplies SIMD expf/logf/expm1f/log1pf) and parallel over
 * rows with OpenMP. The maths is that of dfl_mm/functional.py
 * (dual_focal_loss_elements), the reference it is tested against:
 *
 *   u = +z (class == label) or -z,  sp = softplus(u),  s = gamma * sp
 *   loss = -ln(1 - exp(-s))   (-log(-expm1(-s)) below s = ln 2, else -log1p(-exp(-s)))
 *   dloss/du = -gamma * sigmoid(u) * exp(-s) / (1 - exp(-s)),
 *   dloss/dgamma = -sp * exp(-s) / (1 - exp(-s)),  u < -30: -ln(gamma) - u, -1, -1/gamma
 *
 * Element weight: row_weight[n] (optional) times pos_weight[c] where class c
 * is the row's label, else neg_weight[c] (class weights with alpha folded in;
 * ones by default). Rows whose label is ignore_index (when has_ignore)
 * contribute nothing.
 * Both branches of every select are evaluated (that is what vectorises); the
 * unselected one may be inf, never the result.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TAIL (-30.0f)
#define LN2 0.69314718055994531f
#define INLINE static inline __attribute__((always_inline))

/* Element loss from the signed logit u and sp = softplus(u) = -ln e. */
INLINE float element_loss(float u, float sp, float gamma, float log_gamma) {
  const float s = gamma * sp;
  const float loss = s < LN2 ? -logf(-expm1f(-s)) : -log1pf(-expf(-s));
  return u < TAIL ? -(log_gamma + u) : loss;
}

/* d loss / d u and d loss / d gamma; sigmoid = sigmoid(u) = 1 - e. */
INLINE void element_grads(float u, float sp, float sigmoid, float gamma, float *grad_u,
                          float *grad_gamma) {
  const float s = gamma * sp;
  const float ratio = -expf(-s) / -expm1f(-s); /* -exp(-s) / (1 - exp(-s)) */
  const int tail = u < TAIL;
  *grad_u = tail ? -1.0f : gamma * sigmoid * ratio;
  *grad_gamma = tail ? -1.0f / gamma : sp * ratio;
}

static inline float row_factor(const int64_t *labels, const float *row_weight,
                               int64_t has_ignore, int64_t ignore_index, int64_t n) {
  if (has_ignore && labels[n] == ignore_index) return 0.0f;
  return row_weight ? row_weight[n] : 1.0f;
}

double dfl_sigmoid_forward(const float *logits, const int64_t *labels,
                           const float *row_weight, const float *pos_weight,
                           const float *neg_weight, int64_t has_ignore, int64_t ignore_index,
                           int64_t rows, int64_t classes, float gamma, int threads) {
  const float log_gamma = logf(gamma);
  double total = 0.0;
#pragma omp parallel for reduction(+ : total) num_threads(threads) schedule(static)
  for (int64_t n = 0; n < rows; ++n) {
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
      const float loss = element_loss(u, sp, gamma, log_gamma);
      acc += factor == 0.0f ? 0.0f : factor * loss; /* exactly 0, even for a NaN logit */
    }
    total += (double)w * acc;
  }
  return total;
}

/* Writes scale * d(sum of weighted losses)/d logits into grad (N, C) and
 * returns d(sum of weighted losses)/d gamma. */
double dfl_sigmoid_backward(const float *logits, const int64_t *labels,
                            const float *row_weight, const float *pos_weight,
                            const float *neg_weight, int64_t has_ignore, int64_t ignore_index,
                            int64_t rows, int64_t classes, float gamma, float scale,
                            float *grad, int threads) {
  double total = 0.0;
#pragma omp parallel for reduction(+ : total) num_threads(threads) schedule(static)
  for (int64_t n = 0; n < rows; ++n) {
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
      element_grads(u, sp, sigmoid, gamma, &grad_u, &grad_gamma);
      g[c] = factor == 0.0f ? 0.0f : scale * factor * sign * grad_u;
      acc += factor == 0.0f ? 0.0f : factor * grad_gamma;
    }
    total += acc;
  }
  return total;
}

/* ------------------------------------------------------------------ softmax
 * (B, C, S) float32 logits, labels (B, S). Vectorised over pixels in blocks
 * of BLOCK; the maths of _softmax_chunk in dfl_mm/functional.py: every class
 * is a sigmoid element of its log-odds v_c = ln p_c - ln(1 - p_c), with
 * v_m = z_m - logsumexp(z without m) for the pixel's argmax m, and backward
 * dz = h - p K - pi g_m (see there). Element weight: weight[b, s] (optional,
 * 0 for ignored pixels) * class_weight[c].
 */
#include <stdlib.h>

#define BLOCK 64

typedef struct {
  float lse[BLOCK], lse_rest[BLOCK], zmax[BLOCK], w[BLOCK];
  float neg_log_pmax[BLOCK]; /* -ln p of the argmax, = softplus(lse_rest - zmax) */
  int64_t label[BLOCK], argmax[BLOCK];
  /* the block's first logit in (B, C, S) and its pixel count; kept after the
   * arrays, which stay aligned for the vector loads (first, they cost ~30 %) */
  int64_t offset, len;
} PixelStats;

/* Per-pixel statistics of block ``job``: pixels [s0, s0 + BLOCK) of image b,
 * with job = b * blocks + s0 / BLOCK (the last block of an image may be short). */
static void pixel_stats(const float *z, const int64_t *labels, const float *weight,
                        int64_t has_ignore, int64_t ignore_index, int64_t classes,
                        int64_t spatial, int64_t job, PixelStats *st) {
  const int64_t blocks = (spatial + BLOCK - 1) / BLOCK;
  const int64_t b = job / blocks, s0 = (job % blocks) * BLOCK;
  const int64_t len = spatial - s0 < BLOCK ? spatial - s0 : BLOCK;
  st->offset = b * classes * spatial + s0;
  st->len = len;
  float m2[BLOCK], rest[BLOCK];
  const int64_t base = b * spatial + s0;
  for (int64_t k = 0; k < len; ++k) {
    st->label[k] = labels[base + k];
    float w = weight ? weight[base + k] : 1.0f;
    st->w[k] = (has_ignore && st->label[k] == ignore_index) ? 0.0f : w;
    st->zmax[k] = -INFINITY; m2[k] = -INFINITY; st->argmax[k] = 0;
    rest[k] = 0.0f;
  }
  const float *zb = z + st->offset;
  for (int64_t c = 0; c < classes; ++c) {
    const float *zc = zb + c * spatial;
#pragma omp simd
    for (int64_t k = 0; k < len; ++k) {
      const float v = zc[k];
      const int bigger = v > st->zmax[k];
      m2[k] = bigger ? st->zmax[k] : (v > m2[k] ? v : m2[k]);
      st->argmax[k] = bigger ? c : st->argmax[k];
      st->zmax[k] = bigger ? v : st->zmax[k];
    }
  }
  for (int64_t c = 0; c < classes; ++c) {
    const float *zc = zb + c * spatial;
#pragma omp simd
    for (int64_t k = 0; k < len; ++k) {
      rest[k] += c == st->argmax[k] ? 0.0f : expf(zc[k] - m2[k]);
    }
  }
#pragma omp simd
  for (int64_t k = 0; k < len; ++k) {
    /* sum of exp(z - zmax) = 1 + rest * exp(m2 - zmax): one exp per element */
    /* a +inf logit: NaN, not a finite loss with NaN gradients */
    st->lse[k] = st->zmax[k] == INFINITY
                     ? NAN
                     : st->zmax[k] + log1pf(rest[k] * expf(m2[k] - st->zmax[k]));
    st->lse_rest[k] = m2[k] + logf(rest[k]);
    st->neg_log_pmax[k] = log1pf(expf(st->lse_rest[k] - st->zmax[k]));
  }
}

/* Class c of pixel k: p, and the signed logit u with sp = softplus(u) = -ln e
 * taken from ln p and ln(1 - p) (no softplus to evaluate); for the argmax
 * ln(1 - p) and its log-odds come exactly from the logsumexp of the rest. */
INLINE void softmax_element(const PixelStats *st, int64_t k, int64_t c, float z, float *p,
                            float *log_1mp, float *u, float *sp) {
  const float log_p = z - st->lse[k];
  const int is_max = c == st->argmax[k], is_pos = c == st->label[k];
  *p = expf(log_p);
  *log_1mp = is_max ? st->lse_rest[k] - st->lse[k] : log1pf(-*p);
  const float v = is_max ? st->zmax[k] - st->lse_rest[k] : log_p - *log_1mp;
  *u = is_pos ? v : -v;
  *sp = is_pos ? -*log_1mp : (is_max ? st->neg_log_pmax[k] : -log_p);
}

double dfl_softmax_forward(const float *logits, const int64_t *labels, const float *weight,
                           const float *class_weight, int64_t has_ignore,
                           int64_t ignore_index, int64_t batch, int64_t classes,
                           int64_t spatial, float gamma, int threads) {
  const float log_gamma = logf(gamma);
  const int64_t blocks = (spatial + BLOCK - 1) / BLOCK;
  double total = 0.0;
#pragma omp parallel for reduction(+ : total) num_threads(threads) schedule(static)
  for (int64_t job = 0; job < batch * blocks; ++job) {
    PixelStats st;
    pixel_stats(logits, labels, weight, has_ignore, ignore_index, classes, spatial, job, &st);
    const float *zb = logits + st.offset;
    const int64_t len = st.len;
    float acc = 0.0f;
    for (int64_t c = 0; c < classes; ++c) {
      const float *zc = zb + c * spatial;
      const float cw = class_weight[c];
#pragma omp simd reduction(+ : acc)
      for (int64_t k = 0; k < len; ++k) {
        float p, log_1mp, u, sp;
        softmax_element(&st, k, c, zc[k], &p, &log_1mp, &u, &sp);
        const float factor = st.w[k] * cw;
        const float loss = element_loss(u, sp, gamma, log_gamma);
        acc += factor == 0.0f ? 0.0f : factor * loss;
      }
    }
    total += acc;
  }
  return total;
}

/* Writes scale * d(sum of weighted losses)/d logits into grad (B, C, S) and
 * returns d(sum of weighted losses)/d gamma; with with_loss also the sum of the
 * weighted losses into *loss (the forward pass fused into the backward one:
 * about 1.5x faster than the two passes, for one saved copy of the gradient).
 * *failed is set when the per-thread scratch can not be allocated. */
INLINE double softmax_grads(const float *logits, const int64_t *labels, const float *weight,
                            const float *class_weight, int64_t has_ignore,
                            int64_t ignore_index, int64_t batch, int64_t classes,
                            int64_t spatial, float gamma, float scale, float *grad,
                            int threads, int *failed, const int with_loss, double *loss) {
  const int64_t blocks = (spatial + BLOCK - 1) / BLOCK;
  const float log_gamma = logf(gamma);
  double total = 0.0, loss_total = 0.0;
  *failed = 0;
  /* scratch of one block per thread: refuse sizes that overflow size_t */
  if (classes < 0 || (uint64_t)classes > SIZE_MAX / (sizeof(float) * BLOCK)) {
    *failed = 1;
    return NAN;
  }
  const size_t scratch = sizeof(float) * (size_t)classes * BLOCK;
#pragma omp parallel reduction(+ : total, loss_total) num_threads(threads)
  {
    /* h_c and p_c of one block, kept between the two passes over classes */
    float *h = malloc(scratch);
    float *prob = malloc(scratch);
    if (h == NULL || prob == NULL) {
#pragma omp atomic write
      *failed = 1;
    }
    /* every thread must reach the worksharing loop: it skips the jobs instead */
    const int ok = h != NULL && prob != NULL;
#pragma omp for schedule(static)
    for (int64_t job = 0; job < batch * blocks; ++job) {
      if (!ok) continue;
      PixelStats st;
      pixel_stats(logits, labels, weight, has_ignore, ignore_index, classes, spatial, job, &st);
      const float *zb = logits + st.offset;
      float *gb = grad + st.offset;
      const int64_t len = st.len;
      float k_sum[BLOCK], g_max[BLOCK];
      int active[BLOCK]; /* some element of the pixel weighs != 0 */
      for (int64_t k = 0; k < len; ++k) { k_sum[k] = 0.0f; g_max[k] = 0.0f; active[k] = 0; }
      float acc = 0.0f, lacc = 0.0f;
      for (int64_t c = 0; c < classes; ++c) {
        const float *zc = zb + c * spatial;
        const float cw = class_weight[c];
        float *hc = h + c * BLOCK, *pc = prob + c * BLOCK;
#pragma omp simd reduction(+ : acc, lacc)
        for (int64_t k = 0; k < len; ++k) {
          const int is_max = c == st.argmax[k], is_pos = c == st.label[k];
          float p, log_1mp, u, sp, grad_u, grad_gamma;
          softmax_element(&st, k, c, zc[k], &p, &log_1mp, &u, &sp);
          /* sigmoid(u) = 1 - e: p for the true class, 1 - p (exact for the argmax) else */
          const float sigmoid = is_pos ? p : (is_max ? expf(log_1mp) : 1.0f - p);
          element_grads(u, sp, sigmoid, gamma, &grad_u, &grad_gamma);
          const float factor = st.w[k] * cw;
          const int counts = factor != 0.0f;
          const float grad_v = counts ? factor * (is_pos ? grad_u : -grad_u) : 0.0f;
          acc += counts ? factor * grad_gamma : 0.0f;
          if (with_loss) lacc += counts ? factor * element_loss(u, sp, gamma, log_gamma) : 0.0f;
          active[k] |= counts;
          const float hk = is_max ? grad_v : grad_v / (1.0f - p);
          hc[k] = hk;
          pc[k] = p;
          k_sum[k] += is_max ? 0.0f : hk;
          g_max[k] += is_max ? grad_v : 0.0f;
        }
      }
      for (int64_t c = 0; c < classes; ++c) {
        const float *zc = zb + c * spatial;
        const float *hc = h + c * BLOCK, *pc = prob + c * BLOCK;
        float *gc = gb + c * spatial;
#pragma omp simd
        for (int64_t k = 0; k < len; ++k) {
          const int is_max = c == st.argmax[k];
          const float pi = is_max ? 0.0f : expf(zc[k] - st.lse_rest[k]);
          gc[k] = active[k] ? scale * (hc[k] - pc[k] * k_sum[k] - pi * g_max[k]) : 0.0f;
        }
      }
      total += acc;
      loss_total += lacc;
    }
    free(h);
    free(prob);
  }
  if (with_loss) *loss = loss_total;
  return total;
}

double dfl_softmax_backward(const float *logits, const int64_t *labels, const float *weight,
                            const float *class_weight, int64_t has_ignore,
                            int64_t ignore_index, int64_t batch, int64_t classes,
                            int64_t spatial, float gamma, float scale, float *grad,
                            int threads, int *failed) {
  return softmax_grads(logits, labels, weight, class_weight, has_ignore, ignore_index, batch,
                       classes, spatial, gamma, scale, grad, threads, failed, 0, NULL);
}

double dfl_softmax_forward_backward(const float *logits, const int64_t *labels,
                                    const float *weight, const float *class_weight,
                                    int64_t has_ignore, int64_t ignore_index, int64_t batch,
                                    int64_t classes, int64_t spatial, float gamma,
                                    float scale, float *grad, int threads, int *failed,
                                    double *loss) {
  return softmax_grads(logits, labels, weight, class_weight, has_ignore, ignore_index, batch,
                       classes, spatial, gamma, scale, grad, threads, failed, 1, loss);
}
