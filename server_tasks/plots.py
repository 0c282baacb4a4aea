"""Figures for GFMFR runs (matplotlib Agg, no pyplot: no global figure state).

:func:`plot_group_dynamics` draws the group-assignment map of the GFMFR paper's Figure 3:
rows = sampled users, columns = rounds, colour = group the user was assigned to in that round
(white = the user did not take part in that round). No Flower import here.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np


def plot_group_dynamics(assignments: dict[int, dict], out_png, n_users: int = 100,
                        seed: int = 0) -> Path:
    """Plot which group each of ``n_users`` sampled users was in, round by round.

    Parameters
    ----------
    assignments : dict of int to dict
        ``round -> {client_id: group}`` (e.g. :attr:`GroupTracker.assignments`).
    out_png : str or os.PathLike
        Output image path (parent folders are created).
    n_users : int, default 100
        Users sampled (without replacement, seeded) from everyone who appears in any round;
        all of them when fewer. Rows are ordered by each user's most frequent group, then id.
    seed : int, default 0

    Returns
    -------
    pathlib.Path
        ``out_png``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.figure import Figure
    from matplotlib import colormaps

    if not assignments:
        raise ValueError("assignments is empty: nothing to plot (was grouping run?)")
    if int(n_users) < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    rounds = sorted(assignments)
    users = sorted({u for r in rounds for u in assignments[r]}, key=str)
    rng = np.random.default_rng(seed)
    if len(users) > n_users:
        users = [users[i] for i in sorted(rng.choice(len(users), int(n_users), replace=False))]
    grid = np.full((len(users), len(rounds)), np.nan)
    for j, r in enumerate(rounds):
        for i, u in enumerate(users):
            if u in assignments[r]:
                grid[i, j] = assignments[r][u]

    def modal_group(row: np.ndarray) -> float:
        seen = row[~np.isnan(row)]
        return Counter(seen.tolist()).most_common(1)[0][0] if seen.size else np.inf

    order = sorted(range(len(users)), key=lambda i: (modal_group(grid[i]), str(users[i])))
    grid = grid[order]

    num_groups = int(np.nanmax(grid)) + 1 if np.isfinite(grid).any() else 1
    base = colormaps["tab10" if num_groups <= 10 else "tab20"]
    cmap = ListedColormap([base(k % base.N) for k in range(num_groups)]).with_extremes(
        bad="white")
    norm = BoundaryNorm(np.arange(-0.5, num_groups + 0.5), num_groups)

    # at least 5.5 in wide so the title fits however few rounds there are
    fig = Figure(figsize=(min(14.0, max(5.5, 2.0 + 0.06 * len(rounds))), min(12.0, 1.5 + 0.06 * len(users))))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", interpolation="nearest",
                   cmap=cmap, norm=norm)
    ax.set_xlabel("round")
    ax.set_ylabel(f"user ({len(users)} sampled)")
    step = max(1, len(rounds) // 10)
    ax.set_xticks(range(0, len(rounds), step))
    ax.set_xticklabels([str(rounds[k]) for k in range(0, len(rounds), step)])
    ax.set_yticks([])
    ax.set_title("Group assignment per round (white: not sampled)")
    cbar = fig.colorbar(im, ax=ax, ticks=range(num_groups))
    cbar.set_label("group")
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out
