"""The precision matrix of a latent Gaussian field, factored by its structure (arrays only).

The field is ``x = (beta, b_1, ..., b_T)``: ``p`` common coefficients and each group term's
effects, and the cells' linear predictor is ``A x`` with ``A = [X, Z_1, ..., Z_T]``, ``Z_t`` the
indicator of each cell's level (``codes[t]``) times the term's ``values[t]``, never formed densely.
Terms of one factor may form a correlated block (``(1 + x|g)``): a level's k coefficients then
have a k x k prior precision. For ``K`` points at once (a leading axis: the hyperparameter points
of a quadrature level) with cell weights ``W`` (K, cells) and a prior precision ``Q``
(:class:`Precision`: diagonal, plus each block's coupling of a level's coefficients), the
precision is

    H = A' W A + Q.

The unit (a term, or a block's terms) with the most levels is eliminated first: its block is
block-diagonal (one k x k block per level; k = 1 for a term), so the Schur complement
``S = E - C' D^-1 C`` on the rest (the other terms' levels and beta) costs O(levels), and ``S`` is
factored densely by Cholesky. One factor (or a factor with a few covariates) leaves a p x p
``S``, batched over the K points by numpy; nested factors leave a diagonal-plus-small ``S``;
crossed factors leave a dense block of the smaller factors' levels (MixedModels.jl's blocked
Cholesky), built from sparse products of the codes, one point at a time. ``log det H`` comes from
``D``'s blocks and ``S``'s factor. The crossed products ``Z_t' W Z_u`` are sparse matrix products
of the codes (the pattern is cached once, only the weights change; the lower triangles alone, all
that the factorisation reads). Where one set of cell weights is scaled per point (a normal
outcome), ``C' D^-1 C`` is one sparse product of C's row pairs with D's inverse, and
``diag(H^-1)`` reads ``S^-1`` at those pairs.

Interface (used by :mod:`poolwise.engines.latent`): ``Structure(X, terms, blocks)`` once per
design; ``Structure.factor(W, Q)`` -> :class:`Factor` with ``solve``, ``logdet``,
``diag_inverse``, ``inverse_squares`` (sums of H^-1's squared entries, for exact Hessians) and
``sample`` (``x = L^-T z``, covariance ``H^-1``), all batched over the points;
``Structure.prior_times(Q, x)`` is ``Q x``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

# rest sizes (other terms' levels + p) up to which every point is factored at once, densely
BATCH_REST = 64
# the variances of a large factor may take S^-1 in single precision (half the work; on
# InstEval ~5e-7 relative from double's) where every rest coefficient keeps at least this share
# of its precision given the earlier ones (the Cholesky factor's pivots: no near-collinearity)
SINGLE_SHARE = 1e-3


@dataclass(frozen=True)
class Term:
    """One group term of the field: each cell's level ``codes`` and multiplier ``values``."""

    codes: np.ndarray
    values: np.ndarray
    n_levels: int


def _row_pairs(C):
    """The sparse (m * m, rows) matrix P (CSC) whose product with per-row weights v gives the
    lower triangle of ``C' diag(v) C`` (flattened, the upper triangle zero; all that a Cholesky
    factorisation reads): one entry for each pair of nonzeros of a row of C (rows, m; CSR), the
    later column first; ``P' u`` is then ``sum_(a >= b) C_ja C_jb u_ab`` per row j."""
    from scipy import sparse

    C = C.sorted_indices()
    J, m = C.shape
    k = np.diff(C.indptr)
    row_of = np.repeat(np.arange(J), k)
    rank = np.arange(C.nnz) - C.indptr[row_of]  # each entry's place in its row
    first = np.repeat(np.arange(C.nnz), rank + 1)
    second = np.repeat(C.indptr[row_of], rank + 1)
    second += np.arange(first.size) - np.repeat(np.cumsum(rank + 1) - rank - 1, rank + 1)
    flat = C.indices[first].astype(np.int64) * m + C.indices[second]
    starts = np.concatenate([[0], np.cumsum(np.bincount(row_of, rank + 1, minlength=J))])
    return sparse.csc_matrix(
        (C.data[first] * C.data[second], flat, starts.astype(np.int64)), shape=(m * m, J)
    )


def _cholesky(E: np.ndarray, batched: bool) -> np.ndarray | list[np.ndarray]:
    """The lower Cholesky factors of E (K, m, m), read from its lower triangle: batched by numpy
    (an array), else by LAPACK in place, one point at a time (a list of K, views of E)."""
    if batched:
        return np.linalg.cholesky(E)
    from scipy.linalg import lapack

    out = []
    for e in E:  # e.T is e's memory in Fortran order, its upper triangle e's lower
        u, info = lapack.dpotrf(e.T, lower=0, clean=1, overwrite_a=1)
        if info != 0:
            raise np.linalg.LinAlgError("the Schur complement is not positive definite")
        out.append(u.T)
    return out


def _inverse_lower_at(lk: np.ndarray, single: bool = False) -> np.ndarray:
    """``S^-1``'s lower triangle (the upper zero; C order) from S's lower Cholesky factor; in
    single precision where ``single`` and the factor's pivots allow (``SINGLE_SHARE``)."""
    from scipy.linalg import lapack

    if single and np.all(np.diagonal(lk) ** 2 >= SINGLE_SHARE * np.einsum("ij,ij->i", lk, lk)):
        inv, info = lapack.spotri(lk.T.astype(np.float32), lower=0)
    else:  # lk.T: L' in Fortran order, its upper triangle
        inv, info = lapack.dpotri(lk.T, lower=0)
    if info != 0:
        raise np.linalg.LinAlgError("the Schur complement is singular")
    return inv.T


def _symmetric(low: np.ndarray) -> np.ndarray:
    """The symmetric matrices whose lower triangles ``low`` (..., m, m) hold (their upper
    zero)."""
    return low + np.swapaxes(np.tril(low, -1), -1, -2)


def _inverse_lower(L: list[np.ndarray]) -> np.ndarray:
    """:func:`_inverse_lower_at` at each of S's lower Cholesky factors L (K of them)."""
    out = np.empty((len(L), *L[0].shape))
    for p, lk in enumerate(L):
        out[p] = _inverse_lower_at(lk)
    return out


def _indicator(term: Term, n: int):
    """The (cells x levels) sparse matrix Z of a term."""
    from scipy import sparse

    return sparse.csr_matrix(
        (term.values.astype(float), (np.arange(n), term.codes)), shape=(n, term.n_levels)
    )


@dataclass(frozen=True)
class Precision:
    """The prior precision of the field at K points: its diagonal ``q`` (K, dim) and, per
    correlated block of the structure, the coupling of a level's coefficients ``coupled[b]``
    (K, k, k), zero on the diagonal (the same for every level)."""

    q: np.ndarray
    coupled: tuple[np.ndarray, ...] = ()

    def take(self, points: np.ndarray) -> Precision:
        """The precision at the ``points`` (indices)."""
        return Precision(self.q[points], tuple(c[points] for c in self.coupled))


def _unit_inverse(D: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The inverses of D's per-level blocks (K, J, k, k) and their log determinants' sum (K,):
    in closed form for k = 1 and 2 (numpy's batched solvers cost more than the arithmetic on
    so small matrices); raises LinAlgError where a block is not positive definite."""
    k = D.shape[-1]
    if k == 1:
        det = D[..., 0, 0]
        inv = 1.0 / D
    elif k == 2:
        a, b, c = D[..., 0, 0], D[..., 0, 1], D[..., 1, 1]
        det = a * c - b * b
        inv = np.empty(D.shape)
        np.divide(c, det, out=inv[..., 0, 0])
        np.divide(a, det, out=inv[..., 1, 1])
        np.divide(b, det, out=inv[..., 0, 1])
        np.negative(inv[..., 0, 1], out=inv[..., 0, 1])
        inv[..., 1, 0] = inv[..., 0, 1]
    else:
        np.linalg.cholesky(D)
        return np.linalg.inv(D), np.linalg.slogdet(D)[1].sum(axis=1)
    if not np.all(det > 0) or (k == 2 and not np.all(a > 0)):
        raise np.linalg.LinAlgError("a level's block is not positive definite")
    return inv, np.log(det).sum(axis=1)


def _unit_half_solve(D: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``L^-T z`` per level with ``D = L L'`` (covariance ``D^-1``): D (K, J, k, k), z (K, J, k,
    r); in closed form for k = 1 and 2."""
    k = D.shape[-1]
    if k == 1:
        return z / np.sqrt(D)
    if k == 2:
        l00 = np.sqrt(D[..., 0, 0])
        l10 = D[..., 1, 0] / l00
        l11 = np.sqrt(D[..., 1, 1] - l10**2)
        x1 = z[..., 1, :] / l11[..., None]
        x0 = (z[..., 0, :] - l10[..., None] * x1) / l00[..., None]
        return np.stack([x0, x1], axis=-2)
    return np.linalg.solve(np.swapaxes(np.linalg.cholesky(D), -1, -2), z)


def _unit_apply(Dinv: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``D^-1 v`` per level: Dinv (K, J, k, k), v (K, J, k, r); for k = 2 and r up to 2
    written out column by column (numpy's batched product costs more per 2 x 2 block than
    the arithmetic; from 3 columns on, about as much)."""
    k, r = Dinv.shape[-1], v.shape[-1]
    if k == 1:
        return Dinv * v
    if k > 2 or r > 2:
        return Dinv @ v
    a, b, c = Dinv[..., 0, 0], Dinv[..., 0, 1], Dinv[..., 1, 1]
    out = np.empty(np.broadcast_shapes(Dinv.shape[:-2], v.shape[:-2]) + v.shape[-2:])
    for j in range(r):
        v0, v1, o0, o1 = v[..., 0, j], v[..., 1, j], out[..., 0, j], out[..., 1, j]
        np.multiply(a, v0, out=o0)
        o0 += b * v1
        np.multiply(b, v0, out=o1)
        o1 += c * v1
    return out


def row_dots(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(a * b).sum(axis=-1)``: a short last axis summed by a loop over it (numpy reduces a
    short inner axis several times slower than it multiplies), a long one by einsum."""
    if a.shape[-1] > 8:
        return np.einsum("...i,...i->...", a, b)
    out = a[..., 0] * b[..., 0]
    for c in range(1, a.shape[-1]):
        out += a[..., c] * b[..., c]
    return out


def _block_diag(blocks: np.ndarray):
    """The sparse block-diagonal matrix of ``blocks`` (J, k, k)."""
    from scipy import sparse

    J, k = blocks.shape[0], blocks.shape[1]
    if k == 1:
        return sparse.diags(blocks[:, 0, 0])
    return sparse.bsr_matrix((blocks, np.arange(J), np.arange(J + 1)), shape=(J * k, J * k)).tocsr()


class Structure:
    """The design of a field, and the order in which its precision is factored.

    ``blocks``: the correlated blocks, each the indices of its terms (one factor's codes).

    Example
    -------
    >>> X = np.ones((4, 1))
    >>> s = Structure(X, [Term(np.array([0, 0, 1, 1]), np.ones(4), 2)])
    >>> f = s.factor(np.ones((1, 4)), Precision(np.ones((1, 3))))
    >>> H = np.array([[5.0, 2, 2], [2, 3, 0], [2, 0, 3]])
    >>> bool(np.allclose(f.solve(np.ones((1, 3)))[0], np.linalg.solve(H, np.ones(3))))
    True
    """

    def __init__(
        self, X: np.ndarray, terms: list[Term], blocks: tuple[tuple[int, ...], ...] = ()
    ) -> None:
        from scipy import sparse

        self.X = np.asarray(X, dtype=float)
        n, p = self.X.shape
        self.n, self.p, self.terms = n, p, list(terms)
        self.blocks = tuple(tuple(b) for b in blocks)
        sizes = [t.n_levels for t in self.terms]
        self.offsets = np.cumsum([p, *sizes])[:-1].astype(int) if terms else np.zeros(0, int)
        self.dim = p + sum(sizes)
        self.Z = [_indicator(t, n) for t in self.terms]
        # A = [X, Z_1, ...] and its transpose, sparse
        self.A = sparse.hstack([sparse.csr_matrix(self.X), *self.Z], format="csr")
        self.AT = self.A.T.tocsr()
        self.ZT = [z.T.tocsr() for z in self.Z]
        # the eliminated unit (a block's terms or one term): the one with most levels
        self.unit, self.unit_block = self._eliminated()
        self.k = max(len(self.unit), 1)
        others = [i for i in range(len(self.terms)) if i not in self.unit]
        # x order inside: (eliminated coefficients level by level, rest) with rest = (beta,
        # other terms' levels)
        rest_index = [np.arange(p)] + [self.offsets[i] + np.arange(sizes[i]) for i in others]
        self.rest = np.concatenate(rest_index).astype(int)
        J = sizes[self.unit[0]] if self.unit else 0
        self.first = (self.offsets[list(self.unit)][None, :] + np.arange(J)[:, None]).reshape(-1)
        self.first = self.first.astype(int)
        # the same as slices of x: each unit term's levels, and the rest's ranges (x's, rest's)
        self.first_slices = [slice(o, o + J) for o in self.offsets[list(self.unit)]]
        ends = np.cumsum([0] + [len(r) for r in rest_index])
        self.rest_slices = [
            (slice(int(r[0]), int(r[0]) + len(r)), slice(int(a), int(b)))
            for r, a, b in zip(rest_index, ends[:-1], ends[1:], strict=True)
            if len(r)
        ]
        self._rest_coupling = self._coupling_in_rest()
        blocks_ = [sparse.csr_matrix(self.X)] + [self.Z[i] for i in others]
        self.R = sparse.hstack(blocks_, format="csr")
        self.R.sort_indices()
        self.m = self.R.shape[1]
        self.batched = self.m <= BATCH_REST
        # floats a point takes in a batch (its cells' arrays, its blocks)
        self.point_size = 8 * n + (self.dim + 1) * (self.m + 2) * self.k + self.m**2
        self.PE = _row_pairs(self.R)
        self.PC, self.C_pattern = None, None
        if self.unit:
            k, codes = self.k, self.terms[self.unit[0]].codes
            V = np.stack([self.terms[i].values.astype(float) for i in self.unit], axis=1)
            # D's blocks: DD[(j, a, b), c] = v_a v_b where c is in level j
            rows = ((codes[:, None, None] * k + np.arange(k)[:, None]) * k + np.arange(k)).reshape(
                -1
            )
            vals = (V[:, :, None] * V[:, None, :]).reshape(-1)
            self.DD = sparse.csr_matrix(
                (vals, (rows, np.repeat(np.arange(n), k * k))), shape=(J * k * k, n)
            )
            # the unit's indicator, (J k, cells): row (j, a) holds v_a where c is in level j
            urows = (codes[:, None] * k + np.arange(k)).reshape(-1)
            self.ZU = sparse.csr_matrix(
                (V.reshape(-1), (urows, np.repeat(np.arange(n), k))), shape=(J * k, n)
            )
            self.PC, self.C_pattern = self._cross_pattern(codes, V, J)
        # floats a point's factor holds (D, C, L; and G = D^-1 C where the points are batched)
        levels = self.dim - self.m
        self.factor_size = (
            levels * self.k
            + self.m**2
            + (2 * levels * self.m if self.C_pattern is None else 2 * self.C_pattern.nnz)
        )

    @cached_property
    def R_dense(self) -> np.ndarray | None:
        """R as a dense (cells, m) array where the points are batched (else None), formed on
        first use."""
        return self.R.toarray() if self.batched else None

    def _cross_pattern(self, codes: np.ndarray, V: np.ndarray, J: int):
        """C = Z_u' diag(W) R as a product with the cells' weights: the sparse (entries x
        cells) matrix whose product with W gives C's entries (C dense, (J k, m), where the
        points are batched; else the data of C's fixed sparse pattern). ``V`` (cells, k): the
        unit's values."""
        from scipy import sparse

        R, k, m = self.R.tocoo(), self.k, self.m
        cells = np.repeat(R.row, k)
        rows = (codes[R.row][:, None].astype(np.int64) * k + np.arange(k)).reshape(-1)
        flat = rows * m + np.repeat(R.col, k)
        vals = (V[R.row] * R.data[:, None]).reshape(-1)
        if self.batched:
            return sparse.csr_matrix((vals, (flat, cells)), shape=(J * k * m, self.n)), None
        entries, where = np.unique(flat, return_inverse=True)
        pattern = sparse.csr_matrix(
            (np.arange(1.0, entries.size + 1), (entries // m, entries % m)), shape=(J * k, m)
        )
        # the pattern's data holds each entry's rank (from 1) among the sorted entries
        order = pattern.data.astype(np.int64) - 1
        pos = np.empty(entries.size, dtype=np.int64)
        pos[order] = np.arange(entries.size)
        PC = sparse.csr_matrix((vals, (pos[where], cells)), shape=(entries.size, self.n))
        return PC, pattern

    def _eliminated(self) -> tuple[tuple[int, ...], int | None]:
        """The unit eliminated first, and its block's index (None for a single term)."""
        in_block = {i for b in self.blocks for i in b}
        units = [(b[0], b, i) for i, b in enumerate(self.blocks)]
        units += [(t, (t,), None) for t in range(len(self.terms)) if t not in in_block]
        if not units:
            return (), None
        units.sort(key=lambda u: u[0])
        best = max(units, key=lambda u: self.terms[u[0]].n_levels)
        return best[1], best[2]

    def _coupling_in_rest(self) -> list[tuple[int, np.ndarray, np.ndarray, int, int]]:
        """Where the blocks left in the rest couple their levels' coefficients: per block and
        pair (a, c), the rows and columns of E (block index, rows, cols, a, c)."""
        pos = np.full(self.dim, -1)
        pos[self.rest] = np.arange(self.rest.size)
        out = []
        for bi, block in enumerate(self.blocks):
            if bi == self.unit_block:
                continue
            J = self.terms[block[0]].n_levels
            for a, ta in enumerate(block):
                for c, tc in enumerate(block):
                    if a != c:
                        rows = pos[self.offsets[ta] + np.arange(J)]
                        cols = pos[self.offsets[tc] + np.arange(J)]
                        out.append((bi, rows, cols, a, c))
        return out

    # products with A = [X, Z_1, ...] (K points at once)
    def eta(self, x: np.ndarray, contiguous: bool = True) -> np.ndarray:
        """A x for each row of ``x`` (K, dim): (K, cells); where not ``contiguous``, a view of
        the product's (cells, K) memory (for a reader that takes any order)."""
        out = (self.A @ x.T).T
        return np.ascontiguousarray(out) if contiguous else out

    def gradient(self, g: np.ndarray) -> np.ndarray:
        """A' g for each row of ``g`` (K, cells): (K, dim)."""
        return (self.AT @ np.ascontiguousarray(g.T)).T

    def prior_times(self, Q: Precision, x: np.ndarray) -> np.ndarray:
        """``Q x`` for each row of ``x`` (K, dim)."""
        out = Q.q * x
        for block, P in zip(self.blocks, Q.coupled, strict=True):
            J = self.terms[block[0]].n_levels
            for a, ta in enumerate(block):
                for c, tc in enumerate(block):
                    if a != c:
                        ra, rc = self.offsets[ta], self.offsets[tc]
                        out[:, ra : ra + J] += P[:, a, c][:, None] * x[:, rc : rc + J]
        return out

    def _blocks(self, W: np.ndarray):
        """``A' diag(W_k) A`` by blocks: D (K, J, k, k), C (K, J k, m; a list of sparse
        matrices where the rest is large) and E (K, m, m; its lower triangle), each a sparse
        product of the cells' fixed patterns with the weights."""
        K = W.shape[0]
        WT = np.ascontiguousarray(W.T)
        E = (self.PE @ WT).T.reshape(K, self.m, self.m)
        if not self.unit:
            return np.zeros((K, 0, 1, 1)), np.zeros((K, 0, self.m)), E
        D = (self.DD @ WT).T.reshape(K, -1, self.k, self.k)
        data = (self.PC @ WT).T
        if self.batched:
            return D, data.reshape(K, -1, self.m), E
        return D, [self._with_data(row) for row in data], E

    def _with_data(self, data: np.ndarray):
        """C's sparse pattern holding ``data``."""
        c = self.C_pattern.copy()
        c.data = np.ascontiguousarray(data)
        return c

    def _finish(self, D: np.ndarray, C, E: np.ndarray, Q: Precision, pairs=None) -> Factor:
        """The factor once the prior precision ``Q`` is added to the blocks (D and E, fresh
        arrays, changed in place); ``pairs``: C's :func:`_row_pairs` and its scale at each point
        (C = scale C0), where C is one pattern scaled per point."""
        K, J, k = D.shape[0], D.shape[1], self.k
        for a, sl in enumerate(self.first_slices):
            D[:, :, a, a] += Q.q[:, sl]
        if self.unit_block is not None:
            D += Q.coupled[self.unit_block][:, None]
        E[:, np.arange(self.m), np.arange(self.m)] += Q.q[:, self.rest]
        for bi, rows, cols, a, c in self._rest_coupling:
            E[:, rows, cols] += Q.coupled[bi][:, a, c][:, None]
        Dinv, logdet_D = _unit_inverse(D)
        G = None
        if self.batched:
            G = _unit_apply(Dinv, C.reshape(K, J, k, self.m)).reshape(C.shape)
            E -= np.swapaxes(C, 1, 2) @ G
        elif pairs is not None:  # the lower triangle of C' D^-1 C, all the factor reads
            P, scale = pairs
            for p in range(K):
                E[p] -= (P @ (scale[p] ** 2 * Dinv[p, :, 0, 0])).reshape(self.m, self.m)
        else:
            for p, c in enumerate(C):
                E[p] -= (c.T @ _block_diag(Dinv[p]) @ c).toarray()
        return Factor(self, D, Dinv, logdet_D, C, _cholesky(E, self.batched), pairs, G=G)

    def rest_quadratic(self, M: np.ndarray) -> np.ndarray:
        """``r_c' M r_c`` for each cell's rest row r_c and symmetric M (K, m, m): (K, cells).
        The pair pattern holds each pair of a row once (the lower triangle), so M's
        off-diagonal entries count twice."""
        idx = np.arange(self.m)
        low = 2 * np.tril(M)
        low[:, idx, idx] = M[:, idx, idx]
        return np.ascontiguousarray((self.PE.T @ low.reshape(len(M), -1).T).T)

    def factor(self, W: np.ndarray, Q: Precision) -> Factor:
        """The factor of ``A' diag(W_k) A + Q_k`` at each of the K points."""
        return self._finish(*self._blocks(W), Q)

    def factor_scaled(self, scale: np.ndarray, w0: np.ndarray, Q: Precision) -> Factor:
        """The factor of ``scale_k A' diag(w0) A + Q_k``: one set of cell weights scaled
        per point (a normal outcome's n / sigma^2), its blocks formed once and cached (with
        C's :func:`_row_pairs` where the rest is large and the eliminated unit one term)."""
        if getattr(self, "_scaled_for", None) is not w0:
            self._scaled_for, self._scaled = w0, self._blocks(w0[None])
            single = not self.batched and self.k == 1 and bool(self.unit)
            self._scaled_pairs = _row_pairs(self._scaled[1][0]) if single else None
            if single:  # g_j' S^-1 g_j over a lower triangle: the pairs off the diagonal twice
                P = self._scaled_pairs.copy()
                P.data[P.indices % (self.m + 1) != 0] *= 2
                self._pair_reader = (P.T, P.T.astype(np.float32))  # double, single
        D0, C0, E0 = self._scaled
        s = scale[:, None]
        C = s[:, :, None] * C0 if self.batched else [C0[0] * float(k) for k in scale]
        pairs = None if self._scaled_pairs is None else (self._scaled_pairs, scale)
        return self._finish(s[:, :, None, None] * D0, C, s[:, :, None] * E0, Q, pairs)


def _triangular(L: np.ndarray | list[np.ndarray], b: np.ndarray, transpose: bool) -> np.ndarray:
    """``L^-1 b`` (``L^-T b`` where ``transpose``) at each point, L lower triangular (K, m, m)
    and b (K, m, r): small factors batched by numpy (L an array), large ones (L a list) by BLAS
    one point at a time, as ``x' = b' L^-T`` (``b' L^-1``) on the arrays' own memory."""
    if isinstance(L, np.ndarray):
        return np.linalg.solve(np.swapaxes(L, 1, 2) if transpose else L, b)
    from scipy.linalg import blas

    out = np.empty(b.shape)
    for p, lk in enumerate(L):  # lk.T: L' in Fortran order; b[p].T: b' likewise
        bt = np.ascontiguousarray(b[p]).T
        out[p] = blas.dtrsm(1.0, lk.T, bt, side=1, lower=0, trans_a=int(transpose)).T
    return out


class Factor:
    """``H = [[D, C], [C', E]]`` (eliminated coefficients first) at K points: D's per-level
    blocks (K, J, k, k), their inverses and log determinants' sum, C, and the Cholesky factor L
    (K, m, m; a list of K where the rest is large) of the Schur complement ``S = E - C' D^-1 C``;
    ``pairs``: C's :func:`_row_pairs` and scale per point where C is one pattern scaled per point
    (else None); ``G = D^-1 C`` where the points are batched (else None): the Schur
    complement's, kept for the solves; a factor taken or joined forms it again when first
    read (its copy would cost about as much)."""

    def __init__(
        self,
        s: Structure,
        D: np.ndarray,
        Dinv: np.ndarray,
        logdet_D: np.ndarray,
        C,
        L: np.ndarray | list[np.ndarray],
        pairs=None,
        rest_inv: np.ndarray | None = None,
        G: np.ndarray | None = None,
    ) -> None:
        self.s, self.D, self.Dinv, self.logdet_D, self.C, self.L = s, D, Dinv, logdet_D, C, L
        self.pairs, self._G = pairs, G
        self._rest_inv = rest_inv  # S^-1, once computed

    @property
    def G(self) -> np.ndarray | None:
        """``D^-1 C`` (K, J k, m) where the points are batched (formed once), else None."""
        if self._G is None and self.s.batched:
            K, J, k = self.D.shape[:3]
            C = self.C.reshape(K, J, k, self.s.m)
            self._G = _unit_apply(self.Dinv, C).reshape(self.C.shape)
        return self._G

    def _C(self, v: np.ndarray, transpose: bool) -> np.ndarray:
        """C v (v: (K, m, r)) or C' v (v: (K, J k, r)) per point."""
        if self.s.batched:
            return (np.swapaxes(self.C, 1, 2) if transpose else self.C) @ v
        return np.stack([(c.T if transpose else c) @ vk for c, vk in zip(self.C, v, strict=True)])

    def _Dsolve(self, v: np.ndarray) -> np.ndarray:
        """D^-1 v for v (K, J k, r)."""
        K, J, k = self.D.shape[:3]
        return _unit_apply(self.Dinv, v.reshape(K, J, k, v.shape[-1])).reshape(v.shape)

    def _split(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.take(x, self.s.first, axis=1), np.take(x, self.s.rest, axis=1)

    def _join(self, first: np.ndarray, rest: np.ndarray) -> np.ndarray:
        """x from its parts, by slices (an index array's scatter is slower)."""
        s, K = self.s, first.shape[0]
        out = np.empty((K, s.dim) + first.shape[2:])
        by_level = first.reshape(K, first.shape[1] // s.k, s.k, *first.shape[2:])
        for a, sl in enumerate(s.first_slices):
            out[:, sl] = by_level[:, :, a]
        for into, part in s.rest_slices:
            out[:, into] = rest[:, part]
        return out

    def _cho_solve(self, b: np.ndarray) -> np.ndarray:
        return _triangular(self.L, _triangular(self.L, b, False), True)

    def solve(self, g: np.ndarray) -> np.ndarray:
        """H^-1 g, for g (K, dim) or (K, dim, r)."""
        vec = g.ndim == 2
        if vec:
            g = g[:, :, None]
        g1, g2 = self._split(g)
        y1 = self._Dsolve(g1)
        x2 = self._cho_solve(g2 - self._C(y1, True))
        x1 = y1 - self.G @ x2 if self.G is not None else self._Dsolve(g1 - self._C(x2, False))
        out = self._join(x1, x2)
        return out[:, :, 0] if vec else out

    def logdet(self) -> np.ndarray:
        """log det H at each point."""
        if isinstance(self.L, np.ndarray):
            diag = np.diagonal(self.L, axis1=1, axis2=2)
        else:
            diag = np.array([np.diagonal(lk) for lk in self.L])
        return self.logdet_D + 2 * np.log(diag).sum(axis=1)

    def rest_inverse(self) -> np.ndarray:
        """``S^-1`` (K, m, m), the Schur complement's inverse at each point (computed once, and
        kept by :meth:`take`: the skewness shift and the variances read it both)."""
        if self._rest_inv is None:
            if isinstance(self.L, np.ndarray):
                Linv = _triangular(self.L, np.broadcast_to(np.eye(self.s.m), self.L.shape), False)
                self._rest_inv = np.swapaxes(Linv, 1, 2) @ Linv
            else:
                self._rest_inv = _symmetric(_inverse_lower(self.L))
        return self._rest_inv

    def diag_inverse(self, single: bool = False) -> np.ndarray:
        """The diagonal of H^-1 (the marginal variances): S^-1's diagonal for the rest, and
        ``diag(D^-1) + g_j' S^-1 g_j`` for the eliminated coefficients (g_j: row j of
        ``D^-1 C``); ``single``: a large factor's C one pattern scaled per point may take S^-1
        in single precision (:func:`_inverse_lower_at`), for tables, not derivatives."""
        K, J, k = self.D.shape[:3]
        Dinv = self.Dinv
        own = np.diagonal(Dinv, axis1=2, axis2=3).reshape(K, J * k)
        if self.s.batched:
            Sinv = self.rest_inverse()
            quad = row_dots(self.G @ Sinv, self.G)
            return self._join(own + quad, np.diagonal(Sinv, axis1=1, axis2=2))
        if self.pairs is not None:
            rest, quad = np.empty((K, self.s.m)), np.empty((K, J))
            for p, lk in enumerate(self.L):  # one point's S^-1 at a time
                low = _inverse_lower_at(lk, single)
                rest[p] = np.diagonal(low)
                quad[p] = self._pair_quadratic(p, low)
            return self._join(own + quad, rest)
        low = _inverse_lower(self.L)
        rest = np.diagonal(low, axis1=1, axis2=2).copy()
        quad = []
        for c, low_k, Di in zip(self.C, low, Dinv, strict=True):
            S = _symmetric(low_k)
            G = _block_diag(Di) @ c
            quad.append(np.asarray(G.multiply(G @ S).sum(axis=1)).reshape(-1))
        return self._join(own + np.stack(quad), rest)

    def inverse_squares(self, V: np.ndarray) -> np.ndarray:
        """``V_i' (H^-1 o H^-1) V_j`` (K, r, r): the sums of H^-1's squared entries weighted by
        the columns of V (K, dim, r), each constant over the eliminated unit's coefficients
        (one term's: k = 1), where the second derivatives of ``log det H`` in the prior's and
        the cells' scales read them; the points batched, or C one pattern scaled per point.
        With ``G = D^-1 C``, ``H^-1 = [[D^-1 + G S^-1 G', -G S^-1], [-S^-1 G', S^-1]]``; with
        ``B = G' G`` and ``X = S^-1 B``, the eliminated coefficients' squares sum to
        ``sum(D^-2) + 2 sum_j D^-1_j g_j' S^-1 g_j + tr(X X)``, and against rest coefficient b
        to ``(X S^-1)_bb``."""
        K, J, k = self.D.shape[:3]
        first, rest = self._split(V)
        if k != 1 or not np.allclose(first, first[:, :1]):
            raise ValueError("inverse_squares: weights constant over one eliminated term only")
        if not self.s.batched and self.pairs is None:
            raise ValueError("inverse_squares: batched points or one pattern scaled per point")
        c = first[:, 0] if J else np.zeros((K, V.shape[2]))
        Sinv_all = self.rest_inverse() if self.s.batched else None
        out = np.empty((K, V.shape[2], V.shape[2]))
        for p in range(K):
            Sinv, B, quad = self._squares_parts(p, Sinv_all)
            dinv = self.Dinv[p, :, 0, 0]
            X = Sinv @ B
            side = np.einsum("ab,ab->a", X, Sinv) @ rest[p]
            within = (dinv**2).sum() + 2 * (dinv * quad).sum() + np.einsum("ab,ba->", X, X)
            cross = np.outer(c[p], side)
            np.square(Sinv, out=Sinv)
            out[p] = rest[p].T @ Sinv @ rest[p] + cross + cross.T
            out[p] += within * np.outer(c[p], c[p])
        return out

    def _squares_parts(self, p: int, Sinv_all: np.ndarray | None):
        """At point p: ``S^-1`` (m, m), ``B = G' G`` (m, m) and ``g_j' S^-1 g_j`` (J,);
        ``Sinv_all``: every point's ``S^-1`` where the points are batched."""
        dinv = self.Dinv[p, :, 0, 0]
        if self.s.batched:
            G = dinv[:, None] * self.C[p]
            return Sinv_all[p], G.T @ G, ((G @ Sinv_all[p]) * G).sum(axis=1)
        low = _inverse_lower_at(self.L[p])
        P, scale = self.pairs
        B = (P @ (scale[p] ** 2 * dinv**2)).reshape(self.s.m, self.s.m)
        return _symmetric(low), _symmetric(B), self._pair_quadratic(p, low)

    def _pair_quadratic(self, p: int, low: np.ndarray) -> np.ndarray:
        """``g_j' S^-1 g_j`` (J,) at point p, from ``S^-1``'s lower triangle ``low`` (double or
        single precision), where C is one pattern scaled per point: over C's pairs in row j,
        ``a > b`` twice."""
        reader = self.s._pair_reader[int(low.dtype == np.float32)]
        return (reader @ low.reshape(-1)) * (self.pairs[1][p] * self.Dinv[p, :, 0, 0]) ** 2

    def sample(self, z: np.ndarray) -> np.ndarray:
        """Draws with covariance H^-1 from standard normals z (K, dim, r)."""
        z1, z2 = self._split(z)
        x2 = _triangular(self.L, z2, True)
        K, J, k = self.D.shape[:3]
        own = _unit_half_solve(self.D, z1.reshape(K, J, k, z.shape[-1]))
        spread = self.G @ x2 if self.G is not None else self._Dsolve(self._C(x2, False))
        x1 = own.reshape(K, J * k, z.shape[-1]) - spread
        return self._join(x1, x2)

    @staticmethod
    def concat(parts: list[Factor]) -> Factor:
        """The factors of several batches of points as one (:class:`_Joined`)."""
        return parts[0] if len(parts) == 1 else _Joined(parts)

    def take(self, points: np.ndarray) -> Factor:
        """The factor at the ``points`` (indices; repeats allowed)."""
        C = self.C[points] if self.s.batched else [self.C[k] for k in points]
        return Factor(
            self.s,
            self.D[points],
            self.Dinv[points],
            self.logdet_D[points],
            C,
            self.L[points] if self.s.batched else [self.L[k] for k in points],
            None if self.pairs is None else (self.pairs[0], self.pairs[1][points]),
            None if self._rest_inv is None else self._rest_inv[points],
        )


class _Joined(Factor):
    """The factors of several batches of points as one: their arrays joined when first read;
    the log determinants, and the variances until then, part by part (no copy of the
    blocks)."""

    def __init__(self, parts: list[Factor]) -> None:
        self.parts, self.s = parts, parts[0].s

    def __getattr__(self, name: str):
        lazy = ("D", "Dinv", "logdet_D", "C", "L", "pairs", "_rest_inv", "_G")
        if name not in lazy or "parts" not in vars(self):
            raise AttributeError(name)
        parts, first = self.parts, self.parts[0]
        if first.s.batched:
            C, L = (np.concatenate([getattr(f, a) for f in parts]) for a in ("C", "L"))
        else:
            C, L = ([x for f in parts for x in getattr(f, a)] for a in ("C", "L"))
        D, Dinv, logdet_D = (
            np.concatenate([getattr(f, a) for f in parts]) for a in ("D", "Dinv", "logdet_D")
        )
        pairs = None
        if first.pairs is not None:
            pairs = (first.pairs[0], np.concatenate([f.pairs[1] for f in parts]))
        Factor.__init__(self, self.s, D, Dinv, logdet_D, C, L, pairs)
        return getattr(self, name)

    def logdet(self) -> np.ndarray:
        return np.concatenate([f.logdet() for f in self.parts])

    def diag_inverse(self, single: bool = False) -> np.ndarray:
        if "L" in vars(self):  # joined already (S^-1 perhaps kept): at once
            return super().diag_inverse(single)
        return np.concatenate([f.diag_inverse(single) for f in self.parts])
