/* The book's optimizer updates, one pass per parameter array, for one dtype.
 * Included by optimizer.h once per dtype with OPT_T (the element type),
 * OPT_SQRT (its correctly rounded square root) and OPT_NAME(stem) defined;
 * no include guard on purpose.
 *
 * Invariant: each loop evaluates the book's NumPy expression for one
 * element in NumPy's order and precision, operation by operation: Python
 * float constants are rounded to OPT_T first (NumPy 2 treats them as weak
 * scalars), products are never fused into a multiply-add (optimizer.h
 * switches contraction off), so every result is the book's to the last bit.
 * Adam's lr_t is a NumPy float64 in the book, which makes lr_t * m / (...)
 * a float64 expression rounded to OPT_T once at the end. */

/* p -= lr * g */
OPT_CLONES void OPT_NAME(bp_sgd)(OPT_T *BP_RESTRICT p, const OPT_T *BP_RESTRICT g, Py_ssize_t n, double lr)
{
    const OPT_T a = (OPT_T)lr;
    for (Py_ssize_t i = 0; i < n; i++) p[i] -= a * g[i];
}

/* v_new = momentum * v - lr * g; p += v_new (the book makes v_new a new array) */
OPT_CLONES void OPT_NAME(bp_momentum)(OPT_T *BP_RESTRICT p, const OPT_T *BP_RESTRICT g, const OPT_T *BP_RESTRICT v,
                                      OPT_T *BP_RESTRICT v_new, Py_ssize_t n, double lr, double momentum)
{
    const OPT_T a = (OPT_T)momentum, b = (OPT_T)lr;
    for (Py_ssize_t i = 0; i < n; i++) {
        OPT_T u = a * v[i];
        OPT_T w = b * g[i];
        u = u - w;
        v_new[i] = u;
        p[i] += u;
    }
}

/* p += momentum * momentum * v; p -= (1 + momentum) * lr * g; v *= momentum; v -= lr * g */
OPT_CLONES void OPT_NAME(bp_nesterov)(OPT_T *BP_RESTRICT p, const OPT_T *BP_RESTRICT g, OPT_T *BP_RESTRICT v,
                                      Py_ssize_t n, double lr, double momentum)
{
    const OPT_T mm = (OPT_T)(momentum * momentum), step = (OPT_T)((1 + momentum) * lr);
    const OPT_T m = (OPT_T)momentum, r = (OPT_T)lr;
    for (Py_ssize_t i = 0; i < n; i++) {
        OPT_T q = p[i], u = mm * v[i];
        q = q + u;
        u = step * g[i];
        p[i] = q - u;
        u = v[i] * m;
        q = r * g[i];
        v[i] = u - q;
    }
}

/* h += g * g; p -= lr * g / (sqrt(h) + 1e-7) */
OPT_CLONES void OPT_NAME(bp_adagrad)(OPT_T *BP_RESTRICT p, const OPT_T *BP_RESTRICT g, OPT_T *BP_RESTRICT h,
                                     Py_ssize_t n, double lr)
{
    const OPT_T a = (OPT_T)lr, eps = (OPT_T)1e-7;
    for (Py_ssize_t i = 0; i < n; i++) {
        OPT_T s = g[i] * g[i];
        s = h[i] + s;
        h[i] = s;
        OPT_T num = a * g[i], den = OPT_SQRT(s) + eps;
        p[i] -= num / den;
    }
}

/* h *= decay; h += (1 - decay) * g * g; p -= lr * g / (sqrt(h) + 1e-7) */
OPT_CLONES void OPT_NAME(bp_rmsprop)(OPT_T *BP_RESTRICT p, const OPT_T *BP_RESTRICT g, OPT_T *BP_RESTRICT h,
                                     Py_ssize_t n, double lr, double decay)
{
    const OPT_T a = (OPT_T)lr, d = (OPT_T)decay, c = (OPT_T)(1 - decay), eps = (OPT_T)1e-7;
    for (Py_ssize_t i = 0; i < n; i++) {
        OPT_T s = h[i] * d, t = c * g[i];
        t = t * g[i];
        s = s + t;
        h[i] = s;
        OPT_T num = a * g[i], den = OPT_SQRT(s) + eps;
        p[i] -= num / den;
    }
}

/* m += (1 - beta1) * (g - m); v += (1 - beta2) * (g**2 - v);
 * p -= lr_t * m / (sqrt(v) + 1e-7), that last expression in double */
OPT_CLONES void OPT_NAME(bp_adam)(OPT_T *BP_RESTRICT p, const OPT_T *BP_RESTRICT g, OPT_T *BP_RESTRICT m,
                                  OPT_T *BP_RESTRICT v, Py_ssize_t n, double lr_t, double beta1, double beta2)
{
    const OPT_T c1 = (OPT_T)(1 - beta1), c2 = (OPT_T)(1 - beta2), eps = (OPT_T)1e-7;
    for (Py_ssize_t i = 0; i < n; i++) {
        OPT_T d = g[i] - m[i];
        d = c1 * d;
        OPT_T mi = m[i] + d;
        m[i] = mi;
        OPT_T sq = g[i] * g[i];
        sq = sq - v[i];
        sq = c2 * sq;
        OPT_T vi = v[i] + sq;
        v[i] = vi;
        double num = lr_t * (double)mi;
        OPT_T den = OPT_SQRT(vi) + eps;
        p[i] = (OPT_T)((double)p[i] - num / (double)den);
    }
}
