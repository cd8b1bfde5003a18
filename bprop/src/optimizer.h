/* The book's optimizer updates (SGD, Momentum, Nesterov, AdaGrad, RMSprop,
 * Adam), one pass per parameter array.
 *
 * Invariant: each loop evaluates the book's NumPy expression for one
 * element in NumPy's order and precision, operation by operation: Python
 * float constants are rounded to BP_T first (NumPy 2 treats them as weak
 * scalars), and no product is fused into a multiply-add (contraction is
 * switched off around the bodies below), so every result is the book's to
 * the last bit. Adam's lr_t is a NumPy float64 in the book, which makes
 * lr_t * m / (...) a float64 expression rounded to BP_T once at the end.
 *
 * The body below the #else is written once and instantiated for double and
 * float (as portable.h does).
 */
#ifndef BP_T
#ifndef BP_OPTIMIZER_H
#define BP_OPTIMIZER_H
#include <math.h>
#include <stddef.h>
#include "platform.h"

/* BP_T's correctly rounded square root, as NumPy's np.sqrt. */
#define BP_OPT_SQRT(v) (sizeof(BP_T) == sizeof(float) ? (BP_T)sqrtf((float)(v)) : (BP_T)sqrt((double)(v)))

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#elif defined(_MSC_VER)
#pragma fp_contract(off)
#endif

#define BP_BODY "optimizer.h"
#include "dtype_f64.h"
#include "levels.h"
#include "dtype_undef.h"
#include "dtype_f32.h"
#include "levels.h"
#include "dtype_undef.h"
#undef BP_BODY

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif
#endif

#else /* the body, for one BP_T */

/* p -= lr * g */
BP_LEVELED void BP_LFN(bp_sgd)(BP_T *restrict p, const BP_T *restrict g, ptrdiff_t n, double lr)
{
    const BP_T a = (BP_T)lr;
    for (ptrdiff_t i = 0; i < n; i++) p[i] -= a * g[i];
}

/* v_new = momentum * v - lr * g; p += v_new (the book makes v_new a new array) */
BP_LEVELED void BP_LFN(bp_momentum)(BP_T *restrict p, const BP_T *restrict g, const BP_T *restrict v,
                                        BP_T *restrict v_new, ptrdiff_t n, double lr, double momentum)
{
    const BP_T a = (BP_T)momentum, b = (BP_T)lr;
    for (ptrdiff_t i = 0; i < n; i++) {
        BP_T u = a * v[i];
        BP_T w = b * g[i];
        u = u - w;
        v_new[i] = u;
        p[i] += u;
    }
}

/* p += momentum * momentum * v; p -= (1 + momentum) * lr * g; v *= momentum; v -= lr * g */
BP_LEVELED void BP_LFN(bp_nesterov)(BP_T *restrict p, const BP_T *restrict g, BP_T *restrict v,
                                        ptrdiff_t n, double lr, double momentum)
{
    const BP_T mm = (BP_T)(momentum * momentum), step = (BP_T)((1 + momentum) * lr);
    const BP_T m = (BP_T)momentum, r = (BP_T)lr;
    for (ptrdiff_t i = 0; i < n; i++) {
        BP_T q = p[i], u = mm * v[i];
        q = q + u;
        u = step * g[i];
        p[i] = q - u;
        u = v[i] * m;
        q = r * g[i];
        v[i] = u - q;
    }
}

/* h += g * g; p -= lr * g / (sqrt(h) + 1e-7) */
BP_LEVELED void BP_LFN(bp_adagrad)(BP_T *restrict p, const BP_T *restrict g, BP_T *restrict h,
                                       ptrdiff_t n, double lr)
{
    const BP_T a = (BP_T)lr, eps = (BP_T)1e-7;
    for (ptrdiff_t i = 0; i < n; i++) {
        BP_T s = g[i] * g[i];
        s = h[i] + s;
        h[i] = s;
        BP_T num = a * g[i], den = BP_OPT_SQRT(s) + eps;
        p[i] -= num / den;
    }
}

/* h *= decay; h += (1 - decay) * g * g; p -= lr * g / (sqrt(h) + 1e-7) */
BP_LEVELED void BP_LFN(bp_rmsprop)(BP_T *restrict p, const BP_T *restrict g, BP_T *restrict h,
                                       ptrdiff_t n, double lr, double decay)
{
    const BP_T a = (BP_T)lr, d = (BP_T)decay, c = (BP_T)(1 - decay), eps = (BP_T)1e-7;
    for (ptrdiff_t i = 0; i < n; i++) {
        BP_T s = h[i] * d, t = c * g[i];
        t = t * g[i];
        s = s + t;
        h[i] = s;
        BP_T num = a * g[i], den = BP_OPT_SQRT(s) + eps;
        p[i] -= num / den;
    }
}

/* m += (1 - beta1) * (g - m); v += (1 - beta2) * (g**2 - v);
 * p -= lr_t * m / (sqrt(v) + 1e-7), that last expression in double */
BP_LEVELED void BP_LFN(bp_adam)(BP_T *restrict p, const BP_T *restrict g, BP_T *restrict m,
                                    BP_T *restrict v, ptrdiff_t n, double lr_t, double beta1, double beta2)
{
    const BP_T c1 = (BP_T)(1 - beta1), c2 = (BP_T)(1 - beta2), eps = (BP_T)1e-7;
    for (ptrdiff_t i = 0; i < n; i++) {
        BP_T d = g[i] - m[i];
        d = c1 * d;
        BP_T mi = m[i] + d;
        m[i] = mi;
        BP_T sq = g[i] * g[i];
        sq = sq - v[i];
        sq = c2 * sq;
        BP_T vi = v[i] + sq;
        v[i] = vi;
        double num = lr_t * (double)mi;
        BP_T den = BP_OPT_SQRT(vi) + eps;
        p[i] = (BP_T)((double)p[i] - num / (double)den);
    }
}

#endif
