/* Batch normalisation over the rows of an (n, d) C-ordered array, for one
 * dtype. Included by batchnorm.h once per dtype with BN_T (the element
 * type) and BN_NAME(stem) (the per-dtype function name) defined; no include
 * guard on purpose.
 *
 * Invariants: every array is C-contiguous with the sizes given (the Cython
 * entry checks them); column statistics accumulate in double whatever BN_T
 * is, row by row, so a loop over d vectorises and n only sets the trip
 * count; nothing is read after it is written except through the outputs
 * named as such. */

/* out = gamma * xn + beta with xn = (x - mu) / std, mu and var the column
 * mean and biased variance, std = sqrt(var + eps). Writes mu, var, std (d)
 * and xc, xn, out (n, d). acc is d doubles of scratch. */
BN_CLONES void BN_NAME(bp_bn_forward)(const BN_T *BP_RESTRICT x, Py_ssize_t n, Py_ssize_t d,
                                   const BN_T *BP_RESTRICT gamma, const BN_T *BP_RESTRICT beta, double eps,
                                   BN_T *BP_RESTRICT mu, BN_T *BP_RESTRICT var, BN_T *BP_RESTRICT std,
                                   BN_T *BP_RESTRICT xc, BN_T *BP_RESTRICT xn, BN_T *BP_RESTRICT out,
                                   double *BP_RESTRICT acc)
{
    Py_ssize_t i, j;
    for (j = 0; j < d; j++) acc[j] = 0.0;
    for (i = 0; i < n; i++) {
        const BN_T *row = x + i * d;
        for (j = 0; j < d; j++) acc[j] += (double)row[j];
    }
    for (j = 0; j < d; j++) { mu[j] = (BN_T)(acc[j] / (double)n); acc[j] = 0.0; }
    /* xc is written here in BN_T, and the variance is the mean of its
     * squares: the same values the NumPy twin squares. */
    for (i = 0; i < n; i++) {
        const BN_T *row = x + i * d;
        BN_T *c = xc + i * d;
        for (j = 0; j < d; j++) {
            BN_T v = row[j] - mu[j];
            c[j] = v;
            acc[j] += (double)v * (double)v;
        }
    }
    for (j = 0; j < d; j++) {
        var[j] = (BN_T)(acc[j] / (double)n);
        std[j] = (BN_T)sqrt((double)var[j] + eps);
    }
    for (i = 0; i < n; i++) {
        const BN_T *c = xc + i * d;
        BN_T *z = xn + i * d, *o = out + i * d;
        for (j = 0; j < d; j++) {
            BN_T v = c[j] / std[j];
            z[j] = v;
            o[j] = gamma[j] * v + beta[j];
        }
    }
}

/* The book's backward, in two passes: with per-column sums sd = sum(dout),
 * sdx = sum(dout * xn) and sx = sum(xn) (zero but for rounding; the book's
 * dmu keeps it, so this does too),
 *   dx = gamma / std * (dout - sd / n - (xn - sx / n) * sdx / n),
 * dgamma = sdx, dbeta = sd. acc is 4 d doubles of scratch. */
BN_CLONES void BN_NAME(bp_bn_backward)(const BN_T *BP_RESTRICT dout, const BN_T *BP_RESTRICT xn,
                                       Py_ssize_t n, Py_ssize_t d,
                                       const BN_T *BP_RESTRICT gamma, const BN_T *BP_RESTRICT std,
                                       BN_T *BP_RESTRICT dx, BN_T *BP_RESTRICT dgamma, BN_T *BP_RESTRICT dbeta,
                                       double *BP_RESTRICT acc)
{
    Py_ssize_t i, j;
    double *sd = acc, *sdx = acc + d, *sx = acc + 2 * d, *scale = acc + 3 * d;
    for (j = 0; j < d; j++) sd[j] = sdx[j] = sx[j] = 0.0;
    for (i = 0; i < n; i++) {
        const BN_T *g = dout + i * d, *z = xn + i * d;
        for (j = 0; j < d; j++) {
            sd[j] += (double)g[j];
            sdx[j] += (double)g[j] * (double)z[j];
            sx[j] += (double)z[j];
        }
    }
    for (j = 0; j < d; j++) {
        dbeta[j] = (BN_T)sd[j];
        dgamma[j] = (BN_T)sdx[j];
        /* From here on, the per-column constants of the second pass. */
        sd[j] /= (double)n;
        sdx[j] /= (double)n;
        sx[j] /= (double)n;
        scale[j] = (double)gamma[j] / (double)std[j];
    }
    for (i = 0; i < n; i++) {
        const BN_T *g = dout + i * d, *z = xn + i * d;
        BN_T *o = dx + i * d;
        for (j = 0; j < d; j++)
            o[j] = (BN_T)(scale[j] * ((double)g[j] - sd[j] - ((double)z[j] - sx[j]) * sdx[j]));
    }
}
