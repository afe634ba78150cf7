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

__all__ = [
    "APERTURE_PX",
    "C",
    "K",
    "S",
    "W",
    "band_darkness",
    "fit_band_profiles",
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
    with_cov: bool = True,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Fit the band model to many profiles at once (bounded Levenberg-Marquardt).

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
    with_cov : bool
        Also return the covariance (skip it in inner loops).

    Returns
    -------
    theta : ndarray of shape (n, 4)
    cov : ndarray of shape (n, 4, 4)
        ``(J^T W J)^-1`` over the free parameters, unscaled (multiply by the residual
        variance); zero for fixed parameters, or everywhere when ``with_cov`` is False.
    sse : ndarray of shape (n,)
        Weighted sum of squared residuals.
    """
    n = theta0.shape[0]
    fi = np.asarray(free)
    eye = np.eye(fi.size)
    theta = np.clip(theta0, lower, upper)
    model, jac = band_darkness(theta, s, jacobian=True)
    assert jac is not None
    sse = (weight * (darkness - model) ** 2).sum(1)
    lam = np.full(n, 1e-2)
    active = np.ones(n, bool)
    for _ in range(n_iter):
        idx = np.nonzero(active)[0]
        if idx.size == 0:
            break
        j = jac[idx][..., fi]
        wj = j * weight[idx, :, None]
        jtj = np.einsum("amp,amq->apq", wj, j)
        jtr = np.einsum("amp,am->ap", wj, darkness[idx] - model[idx])
        diag = np.einsum("app->ap", jtj)
        damped = jtj + lam[idx, None, None] * (diag[:, :, None] * eye + 1e-9 * eye)
        step = np.linalg.solve(damped, jtr[..., None])[..., 0]
        trial = theta[idx].copy()
        trial[:, fi] += step
        trial = np.clip(trial, lower[idx], upper[idx])
        t_model, t_jac = band_darkness(trial, s[idx], jacobian=True)
        assert t_jac is not None
        t_sse = (weight[idx] * (darkness[idx] - t_model) ** 2).sum(1)
        better = t_sse < sse[idx]
        acc = idx[better]
        gain = sse[acc] - t_sse[better]
        theta[acc] = trial[better]
        model[acc] = t_model[better]
        jac[acc] = t_jac[better]
        sse[acc] = t_sse[better]
        lam[acc] = np.maximum(lam[acc] / 3.0, 1e-7)
        rej = idx[~better]
        lam[rej] *= 4.0
        # Done: the improvement fell under 1e-7 of the misfit, or the damping froze the step.
        active[acc[gain <= 1e-7 * np.maximum(sse[acc], 1e-12)]] = False
        active[rej[lam[rej] > 1e6]] = False
    cov = np.zeros((n, 4, 4))
    if with_cov:
        j = jac[..., fi]
        jtj = np.einsum("nmp,nmq->npq", j * weight[..., None], j) + 1e-12 * eye
        cov[:, fi[:, None], fi[None, :]] = np.linalg.pinv(jtj)
    return theta, cov, sse


def pool_robust(values: NDArray[np.float64], var: NDArray[np.float64]) -> tuple[float, float]:
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
    ok = np.isfinite(values) & np.isfinite(var) & (var > 0)
    if not ok.any():
        return float("nan"), float("nan")
    v, s2 = values[ok], var[ok]
    wts = 1.0 / s2
    order = np.argsort(v)
    cum = np.cumsum(wts[order])
    est = float(v[order][np.searchsorted(cum, 0.5 * cum[-1])])
    se = math.sqrt(1.0 / wts.sum())
    if v.size > 2:
        chi2 = float(np.median((v - est) ** 2 / s2) / 0.455)  # 0.455: median of chi2(1)
        se *= math.sqrt(max(chi2, 1.0))
    return est, 1.25 * se
