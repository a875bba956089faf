"""Batched solvers behind the interpretable models of :mod:`.linear_models`.

Weighted least squares / ridge in closed form and the weighted lasso by
guessed supports and coordinate descent, for ``B`` independent problems
at once (one per example Lime or KernelShap explains).

Example:
    >>> import torch
    >>> x = torch.rand(1, 40, 2)
    >>> coef, intercept = least_squares_batch(x, x @ torch.tensor([2.0, -1.0]) + 0.5)
    >>> torch.allclose(coef, torch.tensor([[2.0, -1.0]], dtype=torch.float64), atol=1e-6)
    True
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..._engine.threads import serial_threads

__all__ = ["lasso_batch", "least_squares_batch"]


# ----------------------------------------------------------------------- solvers
_SERIAL_FEATURES = 512  # fits with at most this many features run on one CPU thread


def _serial(x: Tensor):
    """One intra-op thread while small CPU problems are fitted (see :mod:`.threads`)."""
    return serial_threads(x.device.type == "cpu" and x.shape[-1] <= _SERIAL_FEATURES)


def _center(x: Tensor, y: Tensor, w: Tensor | None, fit_intercept: bool):
    """Weighted centring; ``w`` is normalised to sum to 1 per problem."""
    b, s, _ = x.shape
    w = torch.full((b, s), 1.0 / s, dtype=x.dtype, device=x.device) if w is None else w / w.sum(1, keepdim=True)
    if not fit_intercept:
        zeros = torch.zeros(b, x.shape[2], dtype=x.dtype, device=x.device)
        return x, y, w, zeros, torch.zeros(b, dtype=x.dtype, device=x.device)
    x_mean = (w.unsqueeze(2) * x).sum(1)
    y_mean = (w * y).sum(1)
    return x - x_mean.unsqueeze(1), y - y_mean.unsqueeze(1), w, x_mean, y_mean


def least_squares_batch(
    x: Tensor, y: Tensor, weights: Tensor | None = None, fit_intercept: bool = True, ridge: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Weighted least squares for ``B`` problems at once: ``x [B, S, F]``, ``y [B, S]``.

    Minimises ``sum_s w_s (y_s - c - x_s . b)^2 + ridge * |b|^2`` per problem
    (the objective of scikit-learn's LinearRegression / Ridge with
    ``sample_weight``), in float64; rank-deficient problems get the
    minimum-norm solution. Returns ``(coef [B, F], intercept [B])``.
    """
    with _serial(x):
        return _least_squares(x, y, weights, fit_intercept, ridge)


def _least_squares(x: Tensor, y: Tensor, weights: Tensor | None, fit_intercept: bool, ridge: float):
    x64, y64 = x.double(), y.double()
    w = None if weights is None else weights.double()
    xc, yc, wn, x_mean, y_mean = _center(x64, y64, w, fit_intercept)
    root = wn.sqrt() if w is None else (w).clamp_min(0).sqrt()
    a = xc * root.unsqueeze(2)
    t = yc * root
    gram = a.transpose(1, 2) @ a
    rhs = (a.transpose(1, 2) @ t.unsqueeze(2)).squeeze(2)
    if ridge > 0:
        gram = gram + ridge * torch.eye(gram.shape[1], dtype=gram.dtype, device=gram.device)
    coef = _solve_gram(gram, rhs)
    intercept = y_mean - (x_mean * coef).sum(1)
    return coef, intercept


_RANK_CUT = 1e3  # eigenvalues below max * F * _RANK_CUT * eps count as zero (minimum-norm solution)


def _solve_gram(gram: Tensor, rhs: Tensor) -> Tensor:
    """``gram^+ rhs`` per problem: by Cholesky where ``gram`` is surely well conditioned, else by eigh.

    The minimum-norm solution drops eigenvalues below the cut; a problem
    whose condition number is bounded (through Frobenius norms of ``gram``
    and of its Cholesky inverse) below ``1 / cut`` has none to drop, so its
    solution is the plain inverse, which Cholesky gives for a fraction of
    the cost of an eigen-decomposition.
    """
    f = gram.shape[1]
    limit = 1.0 / (f * _RANK_CUT * torch.finfo(gram.dtype).eps)
    factor, info = torch.linalg.cholesky_ex(gram)
    good = info == 0
    coef = torch.empty_like(rhs)
    if bool(good.any()):
        inverse = torch.cholesky_inverse(factor[good])
        bound = torch.linalg.matrix_norm(gram[good]) * torch.linalg.matrix_norm(inverse)
        conditioned = torch.isfinite(bound) & (bound < limit)
        coef[good] = (inverse @ rhs[good].unsqueeze(2)).squeeze(2)
        good[good.clone()] = conditioned
    bad = ~good
    if bool(bad.any()):
        # minimum-norm solution through the eigen-decomposition of the (small) Gram matrix
        vals, vecs = torch.linalg.eigh(gram[bad])
        cut = vals.amax(1, keepdim=True).clamp_min(0) * (f * _RANK_CUT * torch.finfo(gram.dtype).eps)
        inv = torch.where(vals > cut, 1.0 / vals.clamp_min(1e-300), torch.zeros_like(vals))
        coef[bad] = (vecs @ (inv * (vecs.transpose(1, 2) @ rhs[bad].unsqueeze(2)).squeeze(2)).unsqueeze(2)).squeeze(2)
    return coef


def _support_solution(gram: Tensor, q: Tensor, coef: Tensor, alpha: float) -> Tensor:
    """Per problem, the stationary point on the support and signs of ``coef`` [B, F]."""
    support = (coef != 0).to(gram.dtype)
    outer = support.unsqueeze(2) * support.unsqueeze(1)
    eye = torch.diag_embed(1 - support)
    system = gram * outer + eye  # rows/columns off the support become the identity
    rhs = (q - alpha * torch.sign(coef)) * support
    return torch.linalg.solve(system, rhs.unsqueeze(2)).squeeze(2) * support


def _exact_on_support(gram: Tensor, q: Tensor, coef: Tensor, alpha: float) -> tuple[Tensor, Tensor | None]:
    """The support solution of ``coef``'s support and signs, and 1.0 where it is the lasso's optimum.

    The optimum is recognised by its optimality conditions; ``None`` for the
    solution when the support's system is singular (nothing solved).
    """
    try:
        exact = _support_solution(gram, q, coef, alpha)
    except RuntimeError:  # a singular support: keep iterating
        return torch.zeros(coef.shape[0], dtype=coef.dtype, device=coef.device), None
    on = coef != 0
    grad = q - (gram @ exact.unsqueeze(2)).squeeze(2)  # = alpha * sign on the support, |.| <= alpha off it
    slack = alpha * (1 + 1e-9) + 1e-12
    signs_kept = torch.where(on, torch.sign(exact) == torch.sign(coef), torch.ones_like(on)).all(1)
    stationary = torch.where(on, (grad - alpha * torch.sign(coef)).abs() <= 1e-9 * (1 + alpha), grad.abs() <= slack)
    finite = torch.isfinite(exact).all(1)
    return (signs_kept & stationary.all(1) & finite).to(coef.dtype), exact


def _active_set_guess(gram: Tensor, q: Tensor, alpha: float, rounds: int = 8) -> tuple[Tensor, Tensor]:
    """Lasso optima found by guessing supports (a primal-dual active-set iteration), and where found.

    From ``b = 0``, each round takes as support the coordinates whose
    coordinate-descent update would be nonzero (``|q - G b + diag(G) b| >
    alpha``, with its sign) and solves the stationary point on it; a guess
    that satisfies the optimality conditions is the (unique) optimum. The
    optima Lime meets are sparse, so a few rounds settle most problems,
    where coordinate descent needs sweeps over every feature; problems not
    settled are left to it.
    """
    b = q.shape[0]
    coef = torch.zeros_like(q)
    found = torch.zeros(b, dtype=q.dtype, device=q.device)
    diag = torch.diagonal(gram, dim1=1, dim2=2)
    guess = coef
    for _ in range(rounds):
        rho = q - (gram @ guess.unsqueeze(2)).squeeze(2) + diag * guess
        signs = torch.where(rho.abs() > alpha, torch.sign(rho), torch.zeros_like(rho))
        solved, exact = _exact_on_support(gram, q, signs, alpha)
        if exact is None:
            break
        solved = solved * (1 - found)
        keep = solved.bool()
        coef[keep] = exact[keep]
        found = found + solved
        if bool(found.all()):
            break
        guess = exact
    return coef, found


def lasso_batch(
    x: Tensor,
    y: Tensor,
    weights: Tensor | None = None,
    alpha: float = 1.0,
    fit_intercept: bool = True,
    max_iter: int = 1000,
    tol: float = 1e-8,
) -> tuple[Tensor, Tensor]:
    """Weighted lasso for ``B`` problems at once by cyclic coordinate descent.

    Minimises ``1 / (2 sum w) * sum_s w_s (y_s - c - x_s . b)^2 + alpha |b|_1``
    per problem -- scikit-learn's ``Lasso(alpha).fit(x, y, sample_weight=w)``
    -- on the weighted Gram matrix, in float64, until the duality gap is
    below ``tol`` times the weighted variance of ``y`` (much tighter than
    scikit-learn's default 1e-4) or ``max_iter`` sweeps. Every four sweeps
    the support and signs of each iterate are tried: where the stationary
    point on them satisfies the optimality conditions it is the exact
    optimum, and that problem is done (so one example costs a few sweeps, not
    a thousand). Before any sweep, a few guessed supports
    (:func:`_active_set_guess`) settle most problems with a handful of small
    solves. Problems that have converged stop changing. Returns
    ``(coef [B, F], intercept [B])``.
    """
    with _serial(x):
        return _lasso(x, y, weights, alpha, fit_intercept, max_iter, tol)


def _lasso(x: Tensor, y: Tensor, weights: Tensor | None, alpha: float, fit_intercept: bool, max_iter: int,
           tol: float) -> tuple[Tensor, Tensor]:
    x64, y64 = x.double(), y.double()
    xc, yc, w, x_mean, y_mean = _center(x64, y64, None if weights is None else weights.double(), fit_intercept)
    wx = xc * w.unsqueeze(2)
    gram = wx.transpose(1, 2) @ xc  # [B, F, F]
    q = (wx * yc.unsqueeze(2)).sum(1)  # [B, F]
    yy = (w * yc * yc).sum(1)
    b, f = q.shape
    # coordinates live in rows ([F, B]) so each update touches contiguous memory
    coef = torch.zeros((f, b), dtype=q.dtype, device=q.device)
    guessed, found = _active_set_guess(gram, q, alpha)
    coef[:, found.bool()] = guessed.transpose(0, 1)[:, found.bool()]
    active = 1 - found  # coordinate descent for the problems the guesses did not settle
    # x^T W (y - x coef), a fresh tensor (for one problem a transpose of q would alias it)
    resid = (q - (gram @ coef.transpose(0, 1).unsqueeze(2)).squeeze(2)).transpose(0, 1).contiguous()
    columns = gram.permute(2, 1, 0).contiguous()  # columns[j] = gram[:, :, j].T  [F, B]
    diag = torch.diagonal(gram, dim1=1, dim2=2).transpose(0, 1).contiguous()
    inv = torch.where(diag > 0, 1.0 / diag.clamp_min(1e-300), torch.zeros_like(diag))
    limit = tol * yy.clamp_min(torch.finfo(torch.float64).tiny)
    for sweep in range(max_iter if bool(active.any()) else 0):
        for j in range(f):
            c_j = coef[j]
            rho = torch.addcmul(resid[j], diag[j], c_j)
            new = (rho - rho.clamp(-alpha, alpha)) * inv[j]  # soft threshold
            step = (new - c_j) * active
            resid.addcmul_(columns[j], step, value=-1.0)
            c_j += step
        if sweep % 4 == 3 or sweep == max_iter - 1:
            # Once the signs have settled, the lasso optimum solves one small linear system.
            solved, exact = _exact_on_support(gram, q, coef.transpose(0, 1), alpha)
            solved = solved * active
            if bool(solved.any()):
                keep = solved.bool()
                coef[:, keep] = exact.transpose(0, 1)[:, keep]
                active = active * (1 - solved)
                if not bool(active.any()):
                    break
            # duality gap of the current iterate (Gram form)
            ct = coef.transpose(0, 1)
            fit = (q * ct).sum(1)
            quad = (ct.unsqueeze(1) @ gram @ ct.unsqueeze(2)).reshape(b)
            rr = yy - 2 * fit + quad
            primal = 0.5 * rr + alpha * ct.abs().sum(1)
            scale = torch.clamp(alpha / resid.abs().amax(0).clamp_min(1e-300), max=1.0)
            dual = scale * (yy - fit) - 0.5 * scale * scale * rr
            active = active * ((primal - dual) > limit).to(active.dtype)
            if not bool(active.any()):
                break
    coef = coef.transpose(0, 1).contiguous()
    intercept = y_mean - (x_mean * coef).sum(1)
    return coef, intercept
