"""The crack's cross-section model and its batched least-squares fit.

A crack seen across its length is a band of width ``w`` (pixels) and relative depth ``k``
(inside it the wall keeps ``1 - k`` of its brightness), centred at offset ``c``, convolved with
the pixel's aperture (a box one pixel wide) and with a Gaussian PSF of ``sigma`` (pixels). Its
*darkness* profile ``1 - image / wall`` along the normal is ``k * g(s - c; w, sigma)``, with
``integral g = w`` whatever the blur.

:func:`band_darkness` evaluates the model and its Jacobian; :func:`fit_band_profiles` fits any
subset of the four parameters to many profiles at once (a vectorised, bounded
Levenberg-Marquardt). :func:`pool_robust` combines per-profile estimates with their variances.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtr

from ._jit import kernel

__all__ = [
    "APERTURE_PX",
    "C",
    "K",
    "S",
    "TABLE",
    "W",
    "band_darkness",
    "band_model",
    "depth_costs",
    "fit_band",
    "fit_band_profiles",
    "fit_many",
    "pool_robust",
]

#: Parameter order in ``theta``: depth, width (px), centre (px), PSF sigma (px).
K, W, C, S = 0, 1, 2, 3

#: Width (pixels) of the pixel aperture in the model: a box whose variance, 1/12 px^2, is that
#: of a square pixel projected on any direction.
APERTURE_PX = 1.0

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SIGN = np.array([1.0, -1.0, -1.0, 1.0])[:, None, None]


def band_darkness(
    theta: NDArray[np.float64], s: NDArray[np.float64], *, jacobian: bool
) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
    """Darkness of a blurred band at offsets ``s``, and its Jacobian in (k, w, c, sigma).

    With ``F(x) = x Phi(x) + phi(x)`` (the integral of the normal CDF), ``a`` the aperture and
    ``u1, u2 = s - c + w/2, s - c - w/2``::

        g = (sigma / a) [F((u1 + a/2)/sigma) - F((u1 - a/2)/sigma)
                         - F((u2 + a/2)/sigma) + F((u2 - a/2)/sigma)]

    and the darkness is ``k * g``. The derivatives are closed-form (``dF/dx = Phi``).

    Parameters
    ----------
    theta : ndarray of shape (n, 4), float64
        ``(k, w_px, c_px, sigma_px)`` per profile.
    s : ndarray of shape (n, m), float64, pixels
        Offsets along the normal.
    jacobian : bool
        Also return the Jacobian.

    Returns
    -------
    darkness : ndarray of shape (n, m)
    jac : ndarray of shape (n, m, 4), or None

    Examples
    --------
    >>> s = np.linspace(-10, 10, 401)[None, :]
    >>> d, _ = band_darkness(np.array([[0.5, 3.0, 0.0, 1.0]]), s, jacobian=False)
    >>> round(float(d.sum() * 0.05), 6)  # area = k * w
    1.5
    """
    k, w, c, sig = (theta[:, i, None] for i in range(4))
    half_ap = 0.5 * APERTURE_PX
    u1 = s - c + 0.5 * w
    u2 = s - c - 0.5 * w
    x = np.stack(
        [(u1 + half_ap) / sig, (u1 - half_ap) / sig, (u2 + half_ap) / sig, (u2 - half_ap) / sig]
    )
    cdf = ndtr(x)
    pdf = np.exp(-0.5 * x * x) * _INV_SQRT_2PI
    g = sig * (_SIGN * (x * cdf + pdf)).sum(0) / APERTURE_PX
    if not jacobian:
        return k * g, None
    d1 = (cdf[0] - cdf[1]) / APERTURE_PX  # dg/du1
    d2 = (cdf[3] - cdf[2]) / APERTURE_PX  # dg/du2
    jac = np.empty(s.shape + (4,))
    jac[..., K] = g
    jac[..., W] = k * 0.5 * (d1 - d2)
    jac[..., C] = -k * (d1 + d2)
    jac[..., S] = k * (_SIGN * pdf).sum(0) / APERTURE_PX
    return k * g, jac


# --------------------------------------------------------------------------------------------
# Compiled: one profile at a time
# --------------------------------------------------------------------------------------------
#: Table range and step of ``F``, ``Phi`` and ``phi`` (beyond it: ``F = max(x, 0)``).
_XM = 9.0
_STEP = 1.0 / 128.0
_X = np.arange(-_XM, _XM + 2 * _STEP, _STEP)
#: Columns: F, Phi, phi at ``-_XM + i * _STEP``.
TABLE = np.ascontiguousarray(
    np.column_stack(
        [_X * ndtr(_X) + np.exp(-0.5 * _X**2) / math.sqrt(2 * math.pi), ndtr(_X)]
        + [np.exp(-0.5 * _X**2) / math.sqrt(2 * math.pi)]
    )
)
_INV_STEP = 1.0 / _STEP
#: A fit stops when a step lowers the misfit by less than this fraction.
_TOL = 1e-4


@kernel(inline="always")
def _fpp(x: float, tab: NDArray[np.float64]) -> tuple[float, float, float]:  # pragma: no cover
    """``F(x)``, ``Phi(x)`` and ``phi(x)`` from the table."""
    if x <= -_XM:
        return 0.0, 0.0, 0.0
    if x >= _XM:
        return x, 1.0, 0.0
    t = (x + _XM) * _INV_STEP
    i = int(t)
    f = t - i
    return (
        tab[i, 0] + f * (tab[i + 1, 0] - tab[i, 0]),
        tab[i, 1] + f * (tab[i + 1, 1] - tab[i, 1]),
        tab[i, 2] + f * (tab[i + 1, 2] - tab[i, 2]),
    )


@kernel()
def band_model(
    theta: NDArray[np.float64],
    s: NDArray[np.float64],
    m: int,
    out: NDArray[np.float64],
    jac: NDArray[np.float64],
    want_jac: bool,
    tab: NDArray[np.float64],
    want_sigma: bool = True,
) -> None:  # pragma: no cover
    """Darkness of the band ``theta = (k, w, c, sigma)`` at the first ``m`` offsets ``s``.

    Writes ``out[:m]`` and, when ``want_jac``, ``jac[:m, :4]`` (derivatives in k, w, c, sigma;
    see :func:`cracksurvey.measure.profile_model.band_darkness`, aperture one pixel); the
    sigma column only when ``want_sigma``.
    """
    k, w, c, sig = theta[0], theta[1], theta[2], theta[3]
    inv = 1.0 / sig
    for j in range(m):
        u1 = s[j] - c + 0.5 * w
        u2 = s[j] - c - 0.5 * w
        x0 = (u1 + 0.5) * inv
        x1 = (u1 - 0.5) * inv
        x2 = (u2 + 0.5) * inv
        x3 = (u2 - 0.5) * inv
        if x0 <= -_XM or x3 >= _XM:  # the pixel sees none of the band: fast path
            out[j] = 0.0
            if want_jac:
                for p in range(4):
                    jac[j, p] = 0.0
            continue
        f0, p0, q0 = _fpp(x0, tab)
        f1, p1, q1 = _fpp(x1, tab)
        f2, p2, q2 = _fpp(x2, tab)
        f3, p3, q3 = _fpp(x3, tab)
        g = sig * (f0 - f1 - f2 + f3)
        out[j] = k * g
        if want_jac:
            d1 = p0 - p1
            d2 = p3 - p2
            jac[j, 0] = g
            jac[j, 1] = 0.5 * k * (d1 - d2)
            jac[j, 2] = -k * (d1 + d2)
            jac[j, 3] = k * (q0 - q1 - q2 + q3) if want_sigma else 0.0


@kernel()
def _solve(a: NDArray[np.float64], b: NDArray[np.float64], n: int) -> bool:  # pragma: no cover
    """Solve ``a[:n, :n] x = b[:n]`` in place (x in b), partial pivoting; False if singular."""
    for col in range(n):
        piv = col
        for r in range(col + 1, n):
            if abs(a[r, col]) > abs(a[piv, col]):
                piv = r
        if abs(a[piv, col]) < 1e-300:
            return False
        if piv != col:
            for q in range(n):
                a[col, q], a[piv, q] = a[piv, q], a[col, q]
            b[col], b[piv] = b[piv], b[col]
        for r in range(col + 1, n):
            f = a[r, col] / a[col, col]
            for q in range(col, n):
                a[r, q] -= f * a[col, q]
            b[r] -= f * b[col]
    for r in range(n - 1, -1, -1):
        acc = b[r]
        for q in range(r + 1, n):
            acc -= a[r, q] * b[q]
        b[r] = acc / a[r, r]
    return True


@kernel()
def fit_band(
    d: NDArray[np.float64],
    s: NDArray[np.float64],
    wt: NDArray[np.float64],
    m: int,
    theta: NDArray[np.float64],
    free: NDArray[np.int64],
    lower: NDArray[np.float64],
    upper: NDArray[np.float64],
    n_iter: int,
    cov: NDArray[np.float64],
    want_cov: bool,
    tab: NDArray[np.float64],
) -> float:  # pragma: no cover
    """Bounded Levenberg-Marquardt fit of the ``free`` parameters of one profile.

    The same iteration as :func:`cracksurvey.measure.profile_model.fit_band_profiles`:
    ``theta`` (4,) is updated in place; ``cov`` (4, 4) receives ``(J^T W J)^-1`` over the free
    parameters (unscaled) when ``want_cov``. Returns the weighted sum of squared residuals.
    """
    nf = free.size
    for p in range(4):
        theta[p] = min(max(theta[p], lower[p]), upper[p])
    model = np.empty(m)
    jac = np.empty((m, 4))
    t_model = np.empty(m)
    t_jac = np.empty((m, 4))
    trial = np.empty(4)
    a = np.empty((4, 4))
    g = np.empty(4)
    with_s = False
    for p in range(nf):
        with_s = with_s or free[p] == 3
    band_model(theta, s, m, model, jac, True, tab, with_s)
    sse = 0.0
    for j in range(m):
        r = d[j] - model[j]
        sse += wt[j] * r * r
    lam = 1e-2
    for _ in range(n_iter):
        for p in range(nf):
            g[p] = 0.0
            for q in range(nf):
                a[p, q] = 0.0
        for j in range(m):
            wj = wt[j]
            if wj == 0.0:
                continue
            r = d[j] - model[j]
            for p in range(nf):
                jp = wj * jac[j, free[p]]
                g[p] += jp * r
                for q in range(p, nf):
                    a[p, q] += jp * jac[j, free[q]]
        for p in range(nf):
            for q in range(p):
                a[p, q] = a[q, p]
            a[p, p] += lam * (a[p, p] + 1e-9)
        if not _solve(a, g, nf):
            break
        for p in range(4):
            trial[p] = theta[p]
        for p in range(nf):
            q = free[p]
            trial[q] = min(max(trial[q] + g[p], lower[q]), upper[q])
        band_model(trial, s, m, t_model, t_jac, True, tab, with_s)
        t_sse = 0.0
        for j in range(m):
            r = d[j] - t_model[j]
            t_sse += wt[j] * r * r
        if t_sse < sse:
            gain = sse - t_sse
            for p in range(4):
                theta[p] = trial[p]
            model, t_model = t_model, model
            jac, t_jac = t_jac, jac
            sse = t_sse
            lam = max(lam / 3.0, 1e-7)
            if gain <= _TOL * max(sse, 1e-12):
                break
        else:
            lam *= 4.0
            if lam > 1e6:
                break
    if want_cov:
        for p in range(4):
            for q in range(4):
                cov[p, q] = 0.0
        h = np.zeros((4, 4))
        for j in range(m):
            wj = wt[j]
            for p in range(nf):
                for q in range(nf):
                    h[p, q] += wj * jac[j, free[p]] * jac[j, free[q]]
        for p in range(nf):
            h[p, p] += 1e-12
        for p in range(nf):  # the inverse, column by column
            e = np.zeros(4)
            e[p] = 1.0
            hh = h.copy()
            if _solve(hh, e, nf):
                for q in range(nf):
                    cov[free[q], free[p]] = e[q]
            else:
                cov[free[p], free[p]] = 1e12
    return sse


@kernel()
def fit_many(
    s: NDArray[np.float64],
    d: NDArray[np.float64],
    wt: NDArray[np.float64],
    m: NDArray[np.int64],
    theta0: NDArray[np.float64],
    lower: NDArray[np.float64],
    upper: NDArray[np.float64],
    free: NDArray[np.int64],
    idx: NDArray[np.int64],
    n_iter: int,
    tab: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:  # pragma: no cover
    """Fit the ``free`` parameters of the profiles ``idx``; the others keep ``theta0``.

    Returns ``theta`` (n, 4), the diagonal of the unscaled covariance (n, 4) and the misfit.
    """
    n = theta0.shape[0]
    theta = theta0.copy()
    var = np.zeros((n, 4))
    sse = np.full(n, np.nan)
    cov = np.zeros((4, 4))
    lo = np.empty(4)
    hi = np.empty(4)
    for t in range(idx.size):
        i = idx[t]
        for p in range(4):
            lo[p] = theta0[i, p]
            hi[p] = theta0[i, p]
        for q in range(free.size):
            lo[free[q]] = lower[i, free[q]]
            hi[free[q]] = upper[i, free[q]]
        th = theta[i].copy()
        sse[i] = fit_band(d[i], s[i], wt[i], m[i], th, free, lo, hi, n_iter, cov, True, tab)
        for p in range(4):
            theta[i, p] = th[p]
            var[i, p] = cov[p, p]
    return theta, var, sse


@kernel()
def depth_costs(
    s: NDArray[np.float64],
    d: NDArray[np.float64],
    wt: NDArray[np.float64],
    m: NDArray[np.int64],
    theta: NDArray[np.float64],
    lower: NDArray[np.float64],
    upper: NDArray[np.float64],
    idx: NDArray[np.int64],
    log_k: NDArray[np.float64],
    tab: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Each profile's misfit as a function of the crack's depth and blur, on a grid of depths.

    For a depth ``k`` the band keeps the profile's darkness area (``w = area / k``) and its
    spread (``sigma_k^2 = w_free^2 / 12 + sigma_free^2 - w^2 / 12``: the band's variance plus
    the blur's); the misfit near there is the Gauss-Newton quadratic in the blur with width and centre profiled out:
    ``sse(k, sigma) = a + b (sigma - sigma_k) + c (sigma - sigma_k)^2``. Returns ``a, b, c,
    sigma_k``, each ``(n, len(log_k))`` (NaN for profiles not in ``idx``).
    """  # pragma: no cover
    n = theta.shape[0]
    g = log_k.size
    qa = np.full((n, g), np.nan)
    qb = np.full((n, g), np.nan)
    qc = np.full((n, g), np.nan)
    sk = np.full((n, g), np.nan)
    th = np.empty(4)
    model = np.empty(s.shape[1])
    jac = np.empty((s.shape[1], 4))
    h = np.empty((3, 3))
    gv = np.empty(3)
    for t in range(idx.size):
        i = idx[t]
        area = theta[i, 0] * theta[i, 1]
        spread = theta[i, 1] ** 2 / 12.0 + theta[i, 3] ** 2
        for q in range(g):
            k = math.exp(log_k[q])
            w = area / k
            th[0] = k
            th[1] = min(max(w, lower[i, 1]), upper[i, 1])
            th[2] = theta[i, 2]
            th[3] = math.sqrt(min(max(spread - w * w / 12.0, 0.04), 9.0))
            band_model(th, s[i], m[i], model, jac, True, tab)
            # normal equations in (w, c, sigma) at this point
            sse = 0.0
            for a_ in range(3):
                gv[a_] = 0.0
                for b_ in range(3):
                    h[a_, b_] = 0.0
            for j in range(m[i]):
                wj = wt[i, j]
                if wj == 0.0:
                    continue
                r = d[i, j] - model[j]
                sse += wj * r * r
                for a_ in range(3):
                    ja = jac[j, a_ + 1]
                    gv[a_] += wj * ja * r
                    for b_ in range(3):
                        h[a_, b_] += wj * ja * jac[j, b_ + 1]
            # profile out (w, c): Schur complement on sigma
            h00, h01, h11 = h[0, 0] + 1e-12, h[0, 1], h[1, 1] + 1e-12
            det = h00 * h11 - h01 * h01
            if det <= 0.0:
                qa[i, q], qb[i, q], qc[i, q] = sse, 0.0, 0.0
            else:
                i00, i01, i11 = h11 / det, -h01 / det, h00 / det
                u0 = i00 * gv[0] + i01 * gv[1]
                u1 = i01 * gv[0] + i11 * gv[1]
                v0 = i00 * h[0, 2] + i01 * h[1, 2]
                v1 = i01 * h[0, 2] + i11 * h[1, 2]
                qa[i, q] = max(sse - (gv[0] * u0 + gv[1] * u1), 0.0)
                qb[i, q] = -2.0 * (gv[2] - (h[2, 0] * u0 + h[2, 1] * u1))
                qc[i, q] = max(h[2, 2] - (h[2, 0] * v0 + h[2, 1] * v1), 0.0)
            sk[i, q] = th[3]
    return qa, qb, qc, sk


def fit_band_profiles(
    darkness: NDArray[np.float64],
    s: NDArray[np.float64],
    weight: NDArray[np.float64],
    theta0: NDArray[np.float64],
    free: tuple[int, ...],
    lower: NDArray[np.float64],
    upper: NDArray[np.float64],
    *,
    n_iter: int = 40,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Fit the band model to many profiles (:func:`fit_band` on each).

    Parameters
    ----------
    darkness, s, weight : ndarray of shape (n, m)
        Observed darkness, offsets (pixels) and weights (0 leaves a point out).
    theta0 : ndarray of shape (n, 4)
        Start values; the parameters not in ``free`` keep them.
    free : tuple of int
        Fitted parameters (:data:`K`, :data:`W`, :data:`C`, :data:`S`).
    lower, upper : ndarray of shape (n, 4)
        Bounds (steps are clipped to them).
    n_iter : int
        Most iterations.

    Returns
    -------
    theta : ndarray of shape (n, 4)
    var : ndarray of shape (n, 4)
        Diagonal of ``(J^T W J)^-1`` over the free parameters, unscaled (multiply by the
        residual variance); zero for fixed parameters.
    sse : ndarray of shape (n,)
        Weighted sum of squared residuals.
    """
    d = np.ascontiguousarray(darkness, dtype=np.float64)
    n, m = d.shape
    return fit_many(
        np.ascontiguousarray(s, dtype=np.float64),
        d,
        np.ascontiguousarray(weight, dtype=np.float64),
        np.full(n, m, np.int64),
        np.ascontiguousarray(theta0, dtype=np.float64),
        np.ascontiguousarray(lower, dtype=np.float64),
        np.ascontiguousarray(upper, dtype=np.float64),
        np.asarray(free, dtype=np.int64),
        np.arange(n, dtype=np.int64),
        int(n_iter),
        TABLE,
    )


@kernel()
def pool_robust(
    values: NDArray[np.float64], var: NDArray[np.float64]
) -> tuple[float, float]:  # pragma: no cover
    """Robust inverse-variance pooling: the weighted median and its standard uncertainty.

    The uncertainty is the inverse-variance standard error times 1.25 (a median's efficiency),
    inflated by the scatter when the values disagree more than their variances say (a robust
    reduced chi-square above 1). NaN when no value has a finite positive variance.

    Examples
    --------
    >>> est, se = pool_robust(np.array([1.0, 1.1, 0.9, 5.0]), np.array([0.01, 0.01, 0.01, 0.01]))
    >>> round(est, 2)
    1.0
    """
    n = 0
    v = np.empty(values.size)
    s2 = np.empty(values.size)
    for i in range(values.size):
        if math.isfinite(values[i]) and math.isfinite(var[i]) and var[i] > 0:
            v[n] = values[i]
            s2[n] = var[i]
            n += 1
    if n == 0:
        return np.nan, np.nan
    v, s2 = v[:n], s2[:n]
    order = np.argsort(v, kind="mergesort")
    total = 0.0
    for i in range(n):
        total += 1.0 / s2[i]
    acc = 0.0
    est = v[order[n - 1]]
    for i in range(n):
        acc += 1.0 / s2[order[i]]
        if acc >= 0.5 * total:
            est = v[order[i]]
            break
    se = math.sqrt(1.0 / total)
    if n > 2:
        z = np.empty(n)
        for i in range(n):
            z[i] = (v[i] - est) ** 2 / s2[i]
        chi2 = np.median(z) / 0.455  # 0.455: median of chi2(1)
        se *= math.sqrt(max(chi2, 1.0))
    return est, 1.25 * se
