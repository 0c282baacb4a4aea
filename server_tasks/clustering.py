"""Client grouping for GFMFR: cluster clients by their prediction functions, keep group ids stable.

Each round GFMFR clusters the participating clients into ``g`` groups by their uploaded
prediction-function parameters ``P_u`` (one flattened vector per client). Cluster labels from
KMeans/agglomerative clustering are arbitrary, so the new clusters are matched to the previous
round's groups by minimum total centroid distance (Hungarian algorithm,
:func:`scipy.optimize.linear_sum_assignment`); group ``l`` then keeps its learned group
embedding ``E_G[l]`` across rounds. :class:`GroupTracker` holds that state and logs assignments.

Methods: ``"kmeans"`` (paper default), ``"agglomerative"`` (Ward), and the ablations
``"random"`` (RandomGroup: balanced random groups) and ``"single"`` (SingleGroup, ``g = 1``
behaviour: everyone in group 0).

Fewer clients than groups (``n_clients < g``): each client forms its own cluster (labels are
``n_clients`` distinct values in ``0..g-1``; the other groups are empty this round). No Flower
import here.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

#: Clustering methods :func:`cluster_clients` accepts (run-config key ``group-method``).
METHODS = ("kmeans", "agglomerative", "random", "single")


def _check_inputs(P: np.ndarray, g: int) -> np.ndarray:
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 2:
        raise ValueError(f"P must be 2-D (n_clients, p), got shape {P.shape}; flatten each "
                         "client's prediction-function parameters into one row")
    if not np.all(np.isfinite(P)):
        raise ValueError("P contains NaN or inf; a client uploaded non-finite parameters")
    if int(g) < 1:
        raise ValueError(f"number of groups g must be >= 1, got {g}")
    return P


def standardize_columns(P: np.ndarray) -> np.ndarray:
    """Z-score each column of ``P`` over the clients (``(x - mean) / std``; a constant column
    becomes 0), so that no parameter dominates the Euclidean distances of K-Means / Ward by its
    scale alone (e.g. FedNCF's output layer against its MLP weights).

    Parameters
    ----------
    P : numpy.ndarray
        float, shape ``(n_clients, p)``.

    Returns
    -------
    numpy.ndarray
        float64, shape ``(n_clients, p)``.
    """
    P = np.asarray(P, dtype=np.float64)
    std = P.std(0)
    return (P - P.mean(0)) / np.where(std > 0, std, 1.0)


def merge_small_groups(P: np.ndarray, labels: np.ndarray, min_size: int) -> np.ndarray:
    """Merge every cluster with fewer than ``min_size`` members into the nearest cluster (by
    centroid distance) that has at least ``min_size``, smallest first, then relabel ``0..k-1``.

    Parameters
    ----------
    P : numpy.ndarray
        float, shape ``(n_clients, p)``: the vectors that were clustered.
    labels : numpy.ndarray
        int, shape ``(n_clients,)``.
    min_size : int
        ``<= 1`` returns ``labels`` unchanged. When no cluster reaches ``min_size``, the
        largest is kept and the others merge into it one by one by distance.

    Returns
    -------
    numpy.ndarray
        int64, shape ``(n_clients,)``, values ``0..k-1`` (``k`` may be below the input's).
    """
    labels = np.asarray(labels, dtype=np.int64).copy()
    if min_size <= 1 or labels.size == 0:
        return labels
    P = np.asarray(P, dtype=np.float64)
    while True:
        ids, sizes = np.unique(labels, return_counts=True)
        small = ids[sizes < min_size]
        if small.size == 0 or ids.size == 1:
            break
        # the smallest small cluster (lowest label on ties) moves to its nearest big one
        l = int(small[np.argmin(sizes[sizes < min_size])])
        targets = ids[(sizes >= min_size) & (ids != l)]
        if targets.size == 0:  # none is big: into the largest of the others
            others = ids != l
            targets = ids[others][[int(np.argmax(sizes[others]))]]
        c = P[labels == l].mean(0)
        d = [float(((P[labels == b].mean(0) - c) ** 2).sum()) for b in targets]
        labels[labels == l] = int(targets[int(np.argmin(d))])
    _, labels = np.unique(labels, return_inverse=True)
    return labels.astype(np.int64)


def cluster_clients(P: np.ndarray, g: int, method: str = "kmeans", seed: int = 0,
                    standardize: bool = False, min_size: int = 1) -> np.ndarray:
    """Cluster clients into at most ``g`` groups by their prediction-function vectors.

    Parameters
    ----------
    P : numpy.ndarray
        float, shape ``(n_clients, p)``: one flattened ``P_u`` per client.
    g : int
        Number of groups (``>= 1``).
    method : {"kmeans", "agglomerative", "random", "single"}, default "kmeans"
        ``"random"`` assigns a balanced random partition (RandomGroup ablation); ``"single"``
        puts everyone in group 0 (SingleGroup ablation).
    seed : int, default 0
        Seed of KMeans initialisation / the random partition.
    standardize : bool, default False
        Cluster :func:`standardize_columns` ``(P)`` instead of ``P`` (kmeans / agglomerative).
    min_size : int, default 1
        Clusters smaller than this are merged into the nearest big one
        (:func:`merge_small_groups`; kmeans / agglomerative), so fewer than ``g`` groups may
        come back.

    Returns
    -------
    numpy.ndarray
        int64, shape ``(n_clients,)``, values in ``0..g-1``. Labels are arbitrary (not yet
        matched to previous groups; see :func:`match_groups`). With ``n_clients < g`` every
        client gets its own label ``0..n_clients-1``.
    """
    P = _check_inputs(P, g)
    n = P.shape[0]
    if method not in METHODS:
        raise ValueError(f"unknown grouping method {method!r}; expected one of {list(METHODS)}")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if method == "single" or g == 1:
        return np.zeros(n, dtype=np.int64)
    if n <= g:
        return np.arange(n, dtype=np.int64)
    if method == "random":
        rng = np.random.default_rng(seed)
        labels = np.arange(n) % g
        return rng.permutation(labels).astype(np.int64)
    X = standardize_columns(P) if standardize else P
    if method == "kmeans":
        from sklearn.cluster import KMeans

        labels = KMeans(n_clusters=g, n_init=4, random_state=seed).fit_predict(X)
    else:
        from sklearn.cluster import AgglomerativeClustering

        labels = AgglomerativeClustering(n_clusters=g, linkage="ward").fit_predict(X)
    return merge_small_groups(X, labels, min_size)


def group_centroids(P: np.ndarray, labels: np.ndarray, g: int) -> np.ndarray:
    """Mean vector of each group; NaN rows for groups without members.

    Parameters
    ----------
    P : numpy.ndarray
        float, shape ``(n_clients, p)``.
    labels : numpy.ndarray
        int, shape ``(n_clients,)``, values in ``0..g-1``.
    g : int

    Returns
    -------
    numpy.ndarray
        float64, shape ``(g, p)``.
    """
    P = np.asarray(P, dtype=np.float64)
    labels = np.asarray(labels)
    out = np.full((int(g), P.shape[1]), np.nan)
    for l in np.unique(labels):
        out[l] = P[labels == l].mean(0)
    return out


def match_groups(prev_centroids: np.ndarray | None, new_centroids: np.ndarray,
                 labels: np.ndarray) -> np.ndarray:
    """Relabel new clusters so each takes the identity of the nearest previous group.

    Solves the assignment problem between the new clusters that have members and the previous
    groups (Hungarian algorithm). The cost of giving new cluster ``i`` the identity of previous
    group ``j`` is ``n_i * ||c_i - prev_j||²``, ``n_i`` = members of cluster ``i``: the total,
    over clients, of how far their group's centroid moves. Without the ``n_i`` weight, outlier
    clusters dominate: with sizes such as ``[90, 1, 1, 1, 1]`` (FedNCF's uploads) the distant
    singletons were matched first and the 90-client group took a different identity in most
    rounds. Previous groups with unknown centroid (NaN row: never had members) cost more than
    any known one, so they are used only when the known ones run out.

    Parameters
    ----------
    prev_centroids : numpy.ndarray or None
        float, shape ``(g, p)``; ``None`` (first round) returns ``labels`` unchanged.
    new_centroids : numpy.ndarray
        float, shape ``(k, p)``, row ``j`` = centroid of new cluster label ``j`` (NaN rows for
        labels without members are ignored); ``k <= g``.
    labels : numpy.ndarray
        int, shape ``(n_clients,)``: new cluster labels in ``0..k-1``.

    Returns
    -------
    numpy.ndarray
        int64, shape ``(n_clients,)``: labels in ``0..g-1`` where a client's label is the
        previous group its cluster was matched to.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if prev_centroids is None or labels.size == 0:
        return labels.copy()
    prev = np.asarray(prev_centroids, dtype=np.float64)
    new = np.asarray(new_centroids, dtype=np.float64)
    if prev.ndim != 2 or new.ndim != 2 or prev.shape[1] != new.shape[1]:
        raise ValueError(f"centroid shapes differ: previous {prev.shape}, new {new.shape}; "
                         "the prediction-function size changed between rounds")
    if new.shape[0] > prev.shape[0]:
        raise ValueError(f"{new.shape[0]} new clusters but only {prev.shape[0]} groups")
    if labels.max() >= new.shape[0] or labels.min() < 0:
        raise ValueError(f"labels must be in 0..{new.shape[0] - 1}, "
                         f"got {labels.min()}..{labels.max()}")
    used = np.unique(labels)
    known = np.all(np.isfinite(prev), axis=1)
    cost = np.zeros((used.size, prev.shape[0]))
    diff = new[used][:, None, :] - np.where(known[:, None], prev, 0.0)[None, :, :]
    sizes = np.bincount(labels, minlength=new.shape[0])[used].astype(np.float64)
    cost[:] = sizes[:, None] * np.einsum("ijk,ijk->ij", diff, diff)
    big = (cost[:, known].max() if known.any() else 0.0) + 1.0
    cost[:, ~known] = big  # unknown groups: all equal, after every known one
    rows, cols = linear_sum_assignment(cost)
    mapping = np.empty(new.shape[0], dtype=np.int64)
    mapping[used[rows]] = cols
    return mapping[labels]


class GroupTracker:
    """Stateful grouping across rounds: cluster, match to previous groups, log.

    Parameters
    ----------
    num_groups : int
        ``g``.
    method : str, default "kmeans"
        See :func:`cluster_clients`.
    seed : int, default 0
        Base seed; round ``r`` clusters with ``seed + r``.
    standardize, min_size
        See :func:`cluster_clients` (the group centroids used for matching stay in the
        unstandardised space).

    Attributes
    ----------
    centroids : numpy.ndarray or None
        float64 ``(g, p)``: latest known centroid of each group (a group empty this round keeps
        its older centroid; NaN if it never had members).
    assignments : dict
        ``round -> {client_id: group}`` for every round seen.
    """

    def __init__(self, num_groups: int, method: str = "kmeans", seed: int = 0,
                 standardize: bool = False, min_size: int = 1) -> None:
        if int(num_groups) < 1:
            raise ValueError(f"num_groups must be >= 1, got {num_groups}")
        if method not in METHODS:
            raise ValueError(f"unknown grouping method {method!r}; expected one of {list(METHODS)}")
        self.num_groups = int(num_groups)
        self.method = method
        self.seed = int(seed)
        self.standardize = bool(standardize)
        self.min_size = int(min_size)
        self.centroids: np.ndarray | None = None
        self.assignments: dict[int, dict] = {}

    def update(self, server_round: int, client_ids: list, P: np.ndarray) -> np.ndarray:
        """Group this round's clients and record the assignment.

        Parameters
        ----------
        server_round : int
        client_ids : list
            Hashable ids, one per row of ``P``.
        P : numpy.ndarray
            float, shape ``(n_clients, p)``.

        Returns
        -------
        numpy.ndarray
            int64 ``(n_clients,)`` stable group ids in ``0..g-1``.
        """
        P = _check_inputs(P, self.num_groups)
        if len(client_ids) != P.shape[0]:
            raise ValueError(f"{len(client_ids)} client ids for {P.shape[0]} rows of P")
        if self.centroids is not None and self.centroids.shape[1] != P.shape[1]:
            raise ValueError(f"prediction-function size changed from {self.centroids.shape[1]} "
                             f"to {P.shape[1]} between rounds")
        raw = cluster_clients(P, self.num_groups, self.method, seed=self.seed + int(server_round),
                              standardize=self.standardize, min_size=self.min_size)
        k = int(raw.max()) + 1 if raw.size else 0
        if self.method == "random":  # RandomGroup: identities are meaningless, skip matching
            labels = raw
        else:
            labels = match_groups(self.centroids, group_centroids(P, raw, k), raw)
        new = group_centroids(P, labels, self.num_groups)
        if self.centroids is None:
            self.centroids = new
        else:
            has = np.all(np.isfinite(new), axis=1)
            self.centroids[has] = new[has]
        self.assignments[int(server_round)] = {cid: int(l) for cid, l in zip(client_ids, labels)}
        return labels
