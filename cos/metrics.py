"""Representation metrics: linear CKA (biased and debiased) and token activation energy."""
from __future__ import annotations

import torch

MANY_BYTES = 64e6     # float64 of a stack `LinearCKA.many` takes at once (each product holds a few of these)


def _as_2d(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() < 2:
        raise ValueError(f"{name}: expected (n, features), got shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1).to(torch.float64)


def linear_cka(x: torch.Tensor, y: torch.Tensor, debiased: bool = False) -> float:
    """Linear CKA between two representations of the same n examples (rows), in feature space.

    Biased: ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) on column-centred features (Kornblith et al. 2019).
    Debiased: the same ratio of unbiased HSIC estimators (Song et al. 2012; Nguyen et al. 2021).
    Each product is taken in feature space or through the n×n Gram matrices, whichever is smaller.
    Accumulated in float64. Needs n > 3.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka: x has {x.shape[0]} examples, y has {y.shape[0]}; they must match")
    if x.shape[0] <= 3:
        raise ValueError(f"linear_cka: needs more than 3 examples, got n={x.shape[0]}")
    return LinearCKA(x, debiased)(y)


def patch_tokens(x0: torch.Tensor, patch: int = 2) -> torch.Tensor:
    """x̂0 (..., C, F, H, W) as (..., tokens, C·p·p) patches, the rows noise.information_flow's CKA compares (and
    the ETA's "cka" unit times): each sample of a stack gives the patches it gives alone."""
    *lead, c, f, h, w = x0.shape
    n = len(lead)
    t = x0.reshape(*lead, c, f, h // patch, patch, w // patch, patch)
    t = t.permute(*range(n), n + 1, n + 2, n + 4, n, n + 3, n + 5)
    return t.reshape(*lead, f * (h // patch) * (w // patch), c * patch * patch)


class LinearCKA:
    """`linear_cka(x, ·)` against one fixed representation `x`, prepared once (its float64 copy, centring and
    HSIC): `LinearCKA(x)(y)` is `linear_cka(x, y)` to the bit, cheaper when x is compared with many y."""

    def __init__(self, x: torch.Tensor, debiased: bool = False):
        self.debiased, self.n = debiased, x.shape[0]
        X = _as_2d(x, "x")
        self.X = X if debiased else X - X.mean(0, keepdim=True)
        self.hsic = _hsic_unbiased if debiased else _hsic_biased
        self._xx = None

    def __call__(self, y: torch.Tensor) -> float:
        n = self.n
        if n != y.shape[0]:
            raise ValueError(f"linear_cka: x has {n} examples, y has {y.shape[0]}; they must match")
        if n <= 3:
            raise ValueError(f"linear_cka: needs more than 3 examples, got n={n}")
        X, Y = self.X, _as_2d(y, "y")
        if not self.debiased:
            Y = Y - Y.mean(0, keepdim=True)
        xy, yy = self.hsic(X, Y), self.hsic(Y, Y)
        return float(xy / self._denominator(yy, 1e-12 * Y.pow(2).sum() ** 2))

    def _denominator(self, yy: torch.Tensor, tol_y: torch.Tensor) -> torch.Tensor:
        """sqrt(HSIC(X, X)·HSIC(Y, Y)) for one y or a stack of them (`yy`, `tol_y` per y), or ValueError where a
        representation is (numerically) constant: relative floors, no variance to compare. X's terms once."""
        if self._xx is None:
            self._xx = (self.hsic(self.X, self.X), 1e-12 * self.X.pow(2).sum() ** 2)
        xx, tol_x = self._xx
        denom = torch.sqrt(xx * yy)
        if not bool(torch.isfinite(denom).all()) or bool(xx <= tol_x) or bool((yy <= tol_y).any()):
            raise ValueError("linear_cka: a representation has zero variance (constant features); CKA is undefined")
        return denom

    def many(self, ys: torch.Tensor) -> list[float]:
        """`[self(y) for y in ys]` for a stack of k representations (k, n, ...), in batched products: per y the
        same steps (centring over its n rows, ‖YᵀX‖²_F, ‖YᵀY‖²_F in float64), equal to the per-y calls up to
        float64 rounding (a batched matmul may sum in another order: bit-identical at the organism's shapes on
        this project's CPUs, within 6e-16 at some others; tests/test_metrics.py). information_flow compares ~100
        branches a row with the clean run: one call each was 37k calls and ~6 s of host time on the organism's gpu
        tier. The Gram-matrix path (fewer examples than features) and the debiased estimator go through `__call__`
        one y at a time; the stack is taken MANY_BYTES of float64 at a time (a full model's tokens are large)."""
        if ys.dim() < 3 or ys.shape[1] != self.n:
            raise ValueError(f"linear_cka: expected (k, {self.n}, features), got shape {tuple(ys.shape)}")
        if self.n <= 3:
            raise ValueError(f"linear_cka: needs more than 3 examples, got n={self.n}")
        feats = ys[0].numel() // self.n if len(ys) else 0
        if self.debiased or self.n < max(self.X.shape[1], feats):
            return [self(y) for y in ys]
        step = max(1, int(MANY_BYTES // (8 * self.n * max(1, feats))))
        return [v for lo in range(0, len(ys), step) for v in self._many(ys[lo:lo + step])]

    def _many(self, ys: torch.Tensor) -> list[float]:
        X, Y = self.X, ys.reshape(ys.shape[0], self.n, -1).to(torch.float64)
        Y = Y - Y.mean(1, keepdim=True)
        yt = Y.transpose(1, 2)
        xy, yy = (yt @ X).pow(2).sum((1, 2)), (yt @ Y).pow(2).sum((1, 2))
        return (xy / self._denominator(yy, 1e-12 * Y.pow(2).sum((1, 2)) ** 2)).tolist()


def _hsic_biased(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """‖YᵀX‖²_F on centred features (HSIC up to a constant that cancels in CKA); through the n×n Gram
    matrices, tr(XXᵀ·YYᵀ), when there are fewer examples than features (the same number, cheaper)."""
    if X.shape[0] < max(X.shape[1], Y.shape[1]):
        return ((X @ X.T) * (Y @ Y.T)).sum()
    return (Y.T @ X).pow(2).sum()


def _hsic_unbiased(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC with K = XXᵀ, L = YYᵀ (zero diagonals), using only feature-space products."""
    n = X.shape[0]
    kd, ld = X.pow(2).sum(1), Y.pow(2).sum(1)               # diag(K), diag(L)
    xty = ((X @ X.T) * (Y @ Y.T)).sum() if n < max(X.shape[1], Y.shape[1]) else (X.T @ Y).pow(2).sum()
    tr_kl = xty - (kd * ld).sum()                            # tr(K̃ L̃)
    k1 = X @ X.sum(0) - kd                                   # K̃ 1
    l1 = Y @ Y.sum(0) - ld                                   # L̃ 1
    return (tr_kl + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2.0 * (k1 @ l1) / (n - 2)) / (n * (n - 3))


def cka_dissimilarity(x: torch.Tensor, y: torch.Tensor, debiased: bool = False) -> float:
    """1 − CKA: 0 means no effect, 1 complete corruption (paper Fig. 3c)."""
    return 1.0 - linear_cka(x, y, debiased=debiased)


def token_energy(hidden: torch.Tensor) -> torch.Tensor:
    """L2 norm over channels of block outputs (..., D) → (...), in float32 (paper Sec. 5.1)."""
    return torch.linalg.vector_norm(hidden, dim=-1, dtype=torch.float32)
