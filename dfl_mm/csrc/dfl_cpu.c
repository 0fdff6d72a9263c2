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

#define TAIL (-30.0f)
#define LN2 0.69314718055994531f

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
      const float s = gamma * sp;
      const float loss = s < LN2 ? -logf(-expm1f(-s)) : -log1pf(-expf(-s));
      const float factor = pos ? pos_weight[c] : neg_weight[c];
      acc += factor * (u < TAIL ? -(log_gamma + u) : loss);
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
      const float s = gamma * sp;
      const float ratio = -expf(-s) / -expm1f(-s); /* -exp(-s) / (1 - exp(-s)) */
      const float factor = w * (pos ? pos_weight[c] : neg_weight[c]);
      const int tail = u < TAIL;
      const float grad_u = tail ? -1.0f : gamma * sigmoid * ratio;
      const float grad_gamma = tail ? -1.0f / gamma : sp * ratio;
      g[c] = scale * factor * sign * grad_u;
      acc += factor * grad_gamma;
    }
    total += acc;
  }
  return total;
}
