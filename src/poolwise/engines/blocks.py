"""The precision matrix of a latent Gaussian field, factored by its structure (arrays only).

The field is ``x = (beta, b_1, ..., b_T)``: ``p`` common coefficients and each group term's
effects, and the cells' linear predictor is ``A x`` with ``A = [X, Z_1, ..., Z_T]``, ``Z_t`` the
indicator of each cell's level (``codes[t]``) times the term's ``values[t]``, never formed densely.
For ``K`` points at once (a leading axis: the hyperparameter points of a quadrature level) with
cell weights ``W`` (K, cells) and a diagonal prior precision ``q`` (K, dim), the precision is

    H = A' W A + diag(q).

The term with the most levels is eliminated first: its block is diagonal, so the Schur complement
``S = E - C' D^-1 C`` on the rest (the other terms' levels and beta) costs O(levels), and ``S`` is
factored densely by Cholesky. One factor (or a factor with a few covariates) leaves a p x p
``S``, batched over the K points by numpy; nested factors leave a diagonal-plus-small ``S``;
crossed factors leave a dense block of the smaller factors' levels (MixedModels.jl's blocked
Cholesky), built from sparse products of the codes, one point at a time. ``log det H`` comes from
``D`` and ``S``'s factor. The crossed products ``Z_t' W Z_u`` are sparse matrix products of the
codes (the pattern is cached once, only the weights change).

Interface (used by :mod:`poolwise.engines.latent`): ``Structure(X, terms)`` once per design;
``Structure.factor(W, q)`` -> :class:`Factor` with ``solve``, ``logdet``, ``diag_inverse`` and
``sample`` (``x = L^-T z``, covariance ``H^-1``), all batched over the points.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

# rest sizes (other terms' levels + p) up to which every point is factored at once, densely
BATCH_REST = 64


@dataclass(frozen=True)
class Term:
    """One group term of the field: each cell's level ``codes`` and multiplier ``values``."""

    codes: np.ndarray
    values: np.ndarray
    n_levels: int


def _pair_pattern(R):
    """The sparse (m * m, cells) matrix whose product with cell weights W gives ``R' diag(W) R``
    (flattened): one entry for each pair of nonzeros in a row of R."""
    from scipy import sparse

    n, m = R.shape
    k = np.diff(R.indptr)
    row_of = np.repeat(np.arange(n), k)
    partners = k[row_of]
    first = np.repeat(np.arange(R.nnz), partners)
    within = np.arange(first.size) - np.repeat(np.cumsum(partners) - partners, partners)
    second = R.indptr[row_of[first]] + within
    cols = R.indices[first].astype(np.int64) * m + R.indices[second]
    vals = R.data[first] * R.data[second]
    return sparse.csr_matrix((vals, (cols, row_of[first])), shape=(m * m, n))


def _indicator(term: Term, n: int):
    """The (cells x levels) sparse matrix Z of a term."""
    from scipy import sparse

    return sparse.csr_matrix(
        (term.values.astype(float), (np.arange(n), term.codes)), shape=(n, term.n_levels)
    )


class Structure:
    """The design of a field, and the order in which its precision is factored.

    Example
    -------
    >>> X = np.ones((4, 1))
    >>> s = Structure(X, [Term(np.array([0, 0, 1, 1]), np.ones(4), 2)])
    >>> f = s.factor(np.ones((1, 4)), np.ones((1, 3)))
    >>> H = np.array([[5.0, 2, 2], [2, 3, 0], [2, 0, 3]])
    >>> bool(np.allclose(f.solve(np.ones((1, 3)))[0], np.linalg.solve(H, np.ones(3))))
    True
    """

    def __init__(self, X: np.ndarray, terms: list[Term]) -> None:
        from scipy import sparse

        self.X = np.asarray(X, dtype=float)
        n, p = self.X.shape
        self.n, self.p, self.terms = n, p, list(terms)
        sizes = [t.n_levels for t in self.terms]
        self.offsets = np.cumsum([p, *sizes])[:-1].astype(int) if terms else np.zeros(0, int)
        self.dim = p + sum(sizes)
        self.Z = [_indicator(t, n) for t in self.terms]
        # A = [X, Z_1, ...] and its transpose, sparse
        self.A = sparse.hstack([sparse.csr_matrix(self.X), *self.Z], format="csr")
        self.AT = self.A.T.tocsr()
        self.ZT = [z.T.tocsr() for z in self.Z]
        # the eliminated term: the one with most levels
        self.elim = int(np.argmax(sizes)) if terms else None
        others = [i for i in range(len(self.terms)) if i != self.elim]
        # x order inside: (eliminated levels, rest) with rest = (beta, other terms' levels)
        rest_index = [np.arange(p)] + [self.offsets[i] + np.arange(sizes[i]) for i in others]
        self.rest = np.concatenate(rest_index).astype(int)
        self.first = (
            self.offsets[self.elim] + np.arange(sizes[self.elim])
            if self.elim is not None
            else np.zeros(0, int)
        )
        blocks = [sparse.csr_matrix(self.X)] + [self.Z[i] for i in others]
        self.R = sparse.hstack(blocks, format="csr")
        self.R.sort_indices()
        self.m = self.R.shape[1]
        self.batched = self.m <= BATCH_REST
        # floats a point takes in a batch (its cells' arrays, its blocks)
        self.point_size = 8 * n + (self.dim + 1) * (self.m + 2) + self.m**2
        self.PE = _pair_pattern(self.R)
        self.PC, self.C_pattern = (None, None) if self.elim is None else self._cross_pattern()
        # floats a point's factor holds (D, C, L)
        levels = self.dim - self.m
        self.factor_size = (
            levels
            + self.m**2
            + (levels * self.m if self.C_pattern is None else 2 * self.C_pattern.nnz)
        )

    @cached_property
    def R_dense(self) -> np.ndarray | None:
        """R as a dense (cells, m) array where the points are batched (else None), formed on
        first use."""
        return self.R.toarray() if self.batched else None

    def _cross_pattern(self):
        """C = Z_e' diag(W v) R as a product with the cells' weights: the sparse (entries x
        cells) matrix whose product with W gives C's entries (C dense, (levels, m), where the
        points are batched; else the data of C's fixed sparse pattern)."""
        from scipy import sparse

        t, R = self.terms[self.elim], self.R.tocoo()
        J = t.n_levels
        vals = t.values[R.row] * R.data
        flat = t.codes[R.row].astype(np.int64) * self.m + R.col
        if self.batched:
            return sparse.csr_matrix((vals, (flat, R.row)), shape=(J * self.m, self.n)), None
        entries, where = np.unique(flat, return_inverse=True)
        pattern = sparse.csr_matrix(
            (np.arange(1.0, entries.size + 1), (entries // self.m, entries % self.m)),
            shape=(J, self.m),
        )
        # the pattern's data holds each entry's rank (from 1) among the sorted entries
        order = pattern.data.astype(np.int64) - 1
        pos = np.empty(entries.size, dtype=np.int64)
        pos[order] = np.arange(entries.size)
        PC = sparse.csr_matrix((vals, (pos[where], R.row)), shape=(entries.size, self.n))
        return PC, pattern

    # products with A = [X, Z_1, ...] (K points at once)
    def eta(self, x: np.ndarray) -> np.ndarray:
        """A x for each row of ``x`` (K, dim): (K, cells)."""
        return np.ascontiguousarray((self.A @ x.T).T)

    def gradient(self, g: np.ndarray) -> np.ndarray:
        """A' g for each row of ``g`` (K, cells): (K, dim)."""
        return (self.AT @ np.ascontiguousarray(g.T)).T

    def _blocks(self, W: np.ndarray):
        """``A' diag(W_k) A`` by blocks: D (K, levels), C (K, levels, m; a list of sparse
        matrices where the rest is large) and E (K, m, m), each a sparse product of the cells'
        fixed patterns with the weights."""
        K = W.shape[0]
        WT = np.ascontiguousarray(W.T)
        E = (self.PE @ WT).T.reshape(K, self.m, self.m)
        if self.elim is None:
            return np.zeros((K, 0)), np.zeros((K, 0, self.m)), E
        t = self.terms[self.elim]
        D = (self.ZT[self.elim] @ (WT * (t.values**2)[:, None])).T
        data = (self.PC @ WT).T
        if self.batched:
            return D, data.reshape(K, -1, self.m), E
        return D, [self._with_data(row) for row in data], E

    def _with_data(self, data: np.ndarray):
        """C's sparse pattern holding ``data``."""
        c = self.C_pattern.copy()
        c.data = np.ascontiguousarray(data)
        return c

    def _finish(self, D: np.ndarray, C, E: np.ndarray, q: np.ndarray) -> Factor:
        """The factor once the prior precision ``q`` is added to the blocks."""
        D = D + q[:, self.first]
        E = E.copy()
        E[:, np.arange(self.m), np.arange(self.m)] += q[:, self.rest]
        if self.batched:
            E -= np.swapaxes(C / D[:, :, None], 1, 2) @ C
        else:
            for k, c in enumerate(C):
                E[k] -= (c.T @ c.multiply((1.0 / D[k])[:, None]).tocsr()).toarray()
        return Factor(self, D, C, np.linalg.cholesky(E))

    def factor(self, W: np.ndarray, q: np.ndarray) -> Factor:
        """The factor of ``A' diag(W_k) A + diag(q_k)`` at each of the K points."""
        return self._finish(*self._blocks(W), q)

    def factor_scaled(self, scale: np.ndarray, w0: np.ndarray, q: np.ndarray) -> Factor:
        """The factor of ``scale_k A' diag(w0) A + diag(q_k)``: one set of cell weights scaled
        per point (a normal outcome's n / sigma^2), its blocks formed once and cached."""
        if getattr(self, "_scaled_for", None) is not w0:
            self._scaled_for, self._scaled = w0, self._blocks(w0[None])
        D0, C0, E0 = self._scaled
        s = scale[:, None]
        C = s[:, :, None] * C0 if self.batched else [C0[0] * float(k) for k in scale]
        return self._finish(s * D0, C, s[:, :, None] * E0, q)


def _triangular(L: np.ndarray, b: np.ndarray, transpose: bool) -> np.ndarray:
    """``L^-1 b`` (``L^-T b`` where ``transpose``) at each point, L lower triangular (K, m, m)
    and b (K, m, r): small factors batched by numpy, large ones by a triangular solve each."""
    if L.shape[1] <= BATCH_REST:
        return np.linalg.solve(np.swapaxes(L, 1, 2) if transpose else L, b)
    from scipy.linalg import solve_triangular

    return np.stack(
        [
            solve_triangular(lk, bk, lower=True, trans=int(transpose), check_finite=False)
            for lk, bk in zip(L, b, strict=True)
        ]
    )


class Factor:
    """``H = [[D, C], [C', E]]`` (eliminated levels first) at K points: D (K, J), C, and the
    Cholesky factor L (K, m, m) of the Schur complement ``S = E - C' D^-1 C``."""

    def __init__(self, s: Structure, D: np.ndarray, C, L: np.ndarray) -> None:
        self.s, self.D, self.C, self.L = s, D, C, L

    def _C(self, v: np.ndarray, transpose: bool) -> np.ndarray:
        """C v (v: (K, m, r)) or C' v (v: (K, J, r)) per point."""
        if self.s.batched:
            return (np.swapaxes(self.C, 1, 2) if transpose else self.C) @ v
        return np.stack([(c.T if transpose else c) @ vk for c, vk in zip(self.C, v, strict=True)])

    def _split(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x[:, self.s.first], x[:, self.s.rest]

    def _join(self, first: np.ndarray, rest: np.ndarray) -> np.ndarray:
        out = np.empty((first.shape[0], self.s.dim) + first.shape[2:])
        out[:, self.s.first], out[:, self.s.rest] = first, rest
        return out

    def _cho_solve(self, b: np.ndarray) -> np.ndarray:
        return _triangular(self.L, _triangular(self.L, b, False), True)

    def solve(self, g: np.ndarray) -> np.ndarray:
        """H^-1 g, for g (K, dim) or (K, dim, r)."""
        vec = g.ndim == 2
        if vec:
            g = g[:, :, None]
        g1, g2 = self._split(g)
        Dx = self.D[:, :, None]
        y1 = g1 / Dx
        x2 = self._cho_solve(g2 - self._C(y1, True))
        x1 = (g1 - self._C(x2, False)) / Dx
        out = self._join(x1, x2)
        return out[:, :, 0] if vec else out

    def logdet(self) -> np.ndarray:
        """log det H at each point."""
        diag = np.diagonal(self.L, axis1=1, axis2=2)
        return np.log(self.D).sum(axis=1) + 2 * np.log(diag).sum(axis=1)

    def diag_inverse(self) -> np.ndarray:
        """The diagonal of H^-1 (the marginal variances): S^-1's diagonal for the rest, and
        ``1/D_j + c_j' S^-1 c_j / D_j^2`` for the eliminated levels (c_j: row j of C)."""
        Linv = _triangular(self.L, np.broadcast_to(np.eye(self.s.m), self.L.shape), False)
        Sinv = np.swapaxes(Linv, 1, 2) @ Linv
        rest = np.diagonal(Sinv, axis1=1, axis2=2)
        if self.s.batched:
            quad = ((self.C @ Sinv) * self.C).sum(axis=2)
        else:
            quad = np.stack(
                [
                    np.asarray(c.multiply(c @ S).sum(axis=1)).reshape(-1)
                    for c, S in zip(self.C, Sinv, strict=True)
                ]
            )
        return self._join(1.0 / self.D + quad / self.D**2, rest)

    def sample(self, z: np.ndarray) -> np.ndarray:
        """Draws with covariance H^-1 from standard normals z (K, dim, r)."""
        z1, z2 = self._split(z)
        x2 = _triangular(self.L, z2, True)
        x1 = (z1 * np.sqrt(self.D)[:, :, None] - self._C(x2, False)) / self.D[:, :, None]
        return self._join(x1, x2)

    @staticmethod
    def concat(parts: list[Factor]) -> Factor:
        """The factors of several batches of points as one."""
        first = parts[0]
        if first.s.batched:
            C = np.concatenate([f.C for f in parts])
        else:
            C = [c for f in parts for c in f.C]
        D = np.concatenate([f.D for f in parts])
        return Factor(first.s, D, C, np.concatenate([f.L for f in parts]))

    def take(self, points: np.ndarray) -> Factor:
        """The factor at the ``points`` (indices; repeats allowed)."""
        C = self.C[points] if self.s.batched else [self.C[k] for k in points]
        return Factor(self.s, self.D[points], C, self.L[points])
