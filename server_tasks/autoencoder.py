"""FedSLLM item autoencoder: PLM text embeddings -> item-embedding space (server side).

FedSLLM (LLM-derived semantic prototypes for client sample selection in federated
recommendation) pre-trains, once on the server, an autoencoder over the pretrained-LM text
embeddings ``x_i = F_PLM(a_i)`` of the items:

* encoder ``E_AE`` and decoder ``D_AE`` are mirrored MLPs trained with reconstruction MSE
  (the paper uses widths ``[768, 512, 256, 128, 32]`` for Sentence-T5; :func:`default_widths`
  adapts them to the text encoder, e.g. ``[384, 256, 128, 64, 32]`` for all-MiniLM-L6-v2);
* the global item table is initialised with ``z_i = E_AE(x_i)`` (:func:`init_item_embeddings`);
* prototypes ``p_j`` are embedded in the same space, ``e_j = E_AE(F_PLM(p_j))``;
* periodically, ``E_AE`` is aligned to the frozen aggregated item embeddings with MSE
  (:func:`align_encoder`), the decoder untouched.

Output calibration. ``nn.Embedding`` initialises rows i.i.d. ``N(0, 1)``; raw bottleneck codes
have an arbitrary offset and scale. :func:`init_item_embeddings` therefore stores a fixed affine
map in the model's buffers (``out_shift``: per-dimension mean of the codes; ``out_scale``: one
scalar so that the centred codes have the requested root-mean-square, default ``1.0`` = the
``nn.Embedding`` default). :meth:`ItemAutoencoder.embed` applies it, so item initialisation,
prototype embeddings and alignment all live in the one item-embedding space. The decoder reads
the raw code :meth:`ItemAutoencoder.encode`, so reconstruction is unaffected by calibration.

No Flower import here.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "ItemAutoencoder",
    "align_encoder",
    "default_widths",
    "init_item_embeddings",
    "pretrain_autoencoder",
]

#: Hidden layers kept by :func:`default_widths` (the paper's ``[768, 512, 256, 128, 32]`` has 3).
MAX_HIDDEN_LAYERS = 3


def default_widths(input_dim: int, emb_dim: int) -> list[int]:
    """Encoder layer widths from the text-embedding width to the item-embedding width.

    Hidden widths are the (at most :data:`MAX_HIDDEN_LAYERS`) largest powers of two strictly
    between ``emb_dim`` and ``input_dim``, descending. This reproduces the paper's
    ``[768, 512, 256, 128, 32]`` and gives ``[384, 256, 128, 64, 32]`` for MiniLM.

    Parameters
    ----------
    input_dim : int
        Width ``D`` of the text embeddings ``x_i``.
    emb_dim : int
        Width ``d`` of the backbone's item embeddings (the bottleneck).

    Returns
    -------
    list of int
        ``[input_dim, h_1, ..., emb_dim]``; ``[input_dim, emb_dim]`` when no power of two lies
        strictly between them.

    Raises
    ------
    ValueError
        A width is not a positive integer.
    """
    input_dim, emb_dim = int(input_dim), int(emb_dim)
    if input_dim <= 0 or emb_dim <= 0:
        raise ValueError(f"input_dim and emb_dim must be positive, got {input_dim=} {emb_dim=}")
    hidden: list[int] = []
    p = 1 << max(0, input_dim.bit_length() - 1)  # largest power of two <= input_dim
    while p > emb_dim and len(hidden) < MAX_HIDDEN_LAYERS:
        if p < input_dim:
            hidden.append(p)
        p >>= 1
    return [input_dim, *hidden, emb_dim]


def _mlp(widths: Sequence[int]) -> nn.Sequential:
    """Linear layers along ``widths`` with ReLU between them and none after the last."""
    layers: list[nn.Module] = []
    for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(w_in, w_out))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ItemAutoencoder(nn.Module):
    """Mirrored MLP autoencoder ``x -> E_AE(x) -> D_AE(E_AE(x))``.

    Parameters
    ----------
    widths : sequence of int
        Encoder widths ``[D, h_1, ..., d]`` (at least two entries, all positive), e.g. from
        :func:`default_widths`. The decoder uses the reversed list. Layers are ``nn.Linear``
        with ReLU between them; the bottleneck and the reconstruction are linear (no
        activation) so codes can be negative like embedding rows.

    Attributes
    ----------
    encoder : torch.nn.Sequential
        ``E_AE``: float ``(batch, D)`` -> raw code float ``(batch, d)``.
    decoder : torch.nn.Sequential
        ``D_AE``: float ``(batch, d)`` -> float ``(batch, D)``.
    out_shift : torch.Tensor
        Buffer, float32 ``(d,)``, subtracted from the raw code by :meth:`embed` (zeros until
        :func:`init_item_embeddings` sets it).
    out_scale : torch.Tensor
        Buffer, float32 scalar, multiplies the centred code in :meth:`embed` (1 until set).
    """

    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2 or any(w <= 0 for w in widths):
            raise ValueError(f"widths must list at least two positive ints, got {widths}")
        self.widths = widths
        self.encoder = _mlp(widths)
        self.decoder = _mlp(widths[::-1])
        self.register_buffer("out_shift", torch.zeros(widths[-1]))
        self.register_buffer("out_scale", torch.ones(()))

    @property
    def input_dim(self) -> int:
        """Width ``D`` of the text embeddings."""
        return self.widths[0]

    @property
    def emb_dim(self) -> int:
        """Width ``d`` of the item embeddings."""
        return self.widths[-1]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Raw code ``E_AE(x)``: float ``(batch, D)`` -> float ``(batch, d)``."""
        return self.encoder(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Calibrated code ``(E_AE(x) - out_shift) * out_scale`` in item-embedding space.

        Parameters
        ----------
        x : torch.Tensor
            float, shape ``(batch, D)``.

        Returns
        -------
        torch.Tensor
            float, shape ``(batch, d)``.
        """
        return (self.encoder(x) - self.out_shift) * self.out_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``D_AE(E_AE(x))``: float ``(batch, D)`` -> float ``(batch, D)``."""
        return self.decoder(self.encoder(x))


def _check_inputs(x: torch.Tensor, width: int | None, name: str = "x") -> torch.Tensor:
    """Return ``x`` as float32 2-D tensor or raise a ValueError naming the problem."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, D) with N > 0, got {tuple(x.shape)}")
    if width is not None and x.shape[1] != width:
        raise ValueError(f"{name} has width {x.shape[1]} but the autoencoder expects {width}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x.float()


def _check_training_args(epochs: int, lr: float, batch_size: int) -> None:
    if int(epochs) < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if int(batch_size) <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")


def _fit(params, loss_fn, n: int, epochs: int, lr: float, batch_size: int, seed: int,
         weight_decay: float) -> list[float]:
    """Adam over shuffled mini-batches; returns the example-weighted mean loss per epoch."""
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(int(seed))
    history: list[float] = []
    for _ in range(int(epochs)):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, int(batch_size)):
            idx = perm[start:start + int(batch_size)]
            loss = loss_fn(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / n)
    return history


def pretrain_autoencoder(x: torch.Tensor, widths: Sequence[int] | None = None, epochs: int = 100,
                         lr: float = 1e-3, seed: int = 0, *, emb_dim: int = 32,
                         batch_size: int = 256, weight_decay: float = 0.0,
                         ) -> tuple[ItemAutoencoder, list[float]]:
    """Train a fresh :class:`ItemAutoencoder` on the item text embeddings (reconstruction MSE).

    Parameters
    ----------
    x : torch.Tensor
        float, shape ``(N, D)``: text embeddings ``F_PLM(a_i)`` of the ``N`` items.
    widths : sequence of int or None, default None
        Encoder widths starting with ``D``; ``None`` -> ``default_widths(D, emb_dim)``.
    epochs : int, default 100
        Passes over the items (0 returns the initialised model and an empty history).
    lr : float, default 1e-3
        Adam learning rate.
    seed : int, default 0
        Seeds the weight initialisation and the mini-batch order (the global torch RNG state is
        restored afterwards), so equal inputs give equal models.
    emb_dim : int, default 32
        Bottleneck width used only when ``widths`` is ``None``.
    batch_size : int, default 256
        Items per Adam step.
    weight_decay : float, default 0.0
        Adam weight decay.

    Returns
    -------
    model : ItemAutoencoder
        Trained, in eval mode, on the CPU.
    history : list of float
        Mean reconstruction MSE per epoch (length ``epochs``).

    Raises
    ------
    ValueError
        ``x`` is not a finite ``(N, D)`` tensor, ``widths[0] != D``, or a training argument is
        out of range.
    """
    x = _check_inputs(x, None).cpu()
    widths = list(widths) if widths is not None else default_widths(x.shape[1], emb_dim)
    x = _check_inputs(x, int(widths[0]))
    _check_training_args(epochs, lr, batch_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = ItemAutoencoder(widths)
    model.train()

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        xb = x[idx]
        return nn.functional.mse_loss(model(xb), xb)

    history = _fit(model.parameters(), loss_fn, x.shape[0], epochs, lr, batch_size, seed,
                   weight_decay)
    return model.eval(), history


def align_encoder(model: ItemAutoencoder, x: torch.Tensor, targets: torch.Tensor,
                  epochs: int = 20, lr: float = 1e-3, *, seed: int = 0, batch_size: int = 256,
                  ) -> list[float]:
    """Train ``E_AE`` so that ``model.embed(x_i)`` matches the aggregated item embeddings.

    Only the encoder's parameters are optimised (MSE between :meth:`ItemAutoencoder.embed` and
    ``targets``); the decoder and the calibration buffers are left unchanged, and ``targets``
    is treated as a constant (detached).

    Parameters
    ----------
    model : ItemAutoencoder
        Trained in place.
    x : torch.Tensor
        float, shape ``(N, D)``: item text embeddings.
    targets : torch.Tensor
        float, shape ``(N, d)``: frozen global item embeddings (``item_emb.weight``).
    epochs : int, default 20
        Passes over the items.
    lr : float, default 1e-3
        Adam learning rate.
    seed : int, default 0
        Seeds the mini-batch order.
    batch_size : int, default 256
        Items per Adam step.

    Returns
    -------
    list of float
        Mean alignment MSE per epoch (length ``epochs``).

    Raises
    ------
    ValueError
        Shapes do not match the model or each other, or a value is not finite.
    """
    if not isinstance(model, ItemAutoencoder):
        raise TypeError(f"model must be an ItemAutoencoder, got {type(model).__name__}")
    x = _check_inputs(x, model.input_dim)
    targets = _check_inputs(targets, model.emb_dim, "targets").detach()
    if targets.shape[0] != x.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but targets has {targets.shape[0]}; "
                         "both must list the same items in the same order")
    _check_training_args(epochs, lr, batch_size)
    device = model.out_scale.device
    x, targets = x.to(device), targets.to(device)
    model.train()

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(model.embed(x[idx]), targets[idx])

    history = _fit(model.encoder.parameters(), loss_fn, x.shape[0], epochs, lr, batch_size,
                   seed, 0.0)
    model.eval()
    return history


@torch.no_grad()
def init_item_embeddings(model: ItemAutoencoder, x: torch.Tensor,
                         scale: float = 1.0) -> torch.Tensor:
    """Calibrate :meth:`ItemAutoencoder.embed` on the items and return their embeddings.

    Sets ``model.out_shift`` to the per-dimension mean of the raw codes ``E_AE(x_i)`` and
    ``model.out_scale`` so that the centred codes have root-mean-square ``scale`` over all
    entries. ``scale=1.0`` matches ``nn.Embedding``'s default ``N(0, 1)`` initialisation; pass the
    backbone's own init std if it re-initialises its table (e.g. ``0.01``). Prototype
    embeddings and :func:`align_encoder` then use the same calibrated map.

    Parameters
    ----------
    model : ItemAutoencoder
        Its buffers are updated in place.
    x : torch.Tensor
        float, shape ``(N, D)``: text embeddings of all ``N`` items, in item-index order.
    scale : float, default 1.0
        Target root-mean-square of the returned entries.

    Returns
    -------
    torch.Tensor
        float32, shape ``(N, d)``: initial global item embeddings (copy into
        ``item_emb.weight``).

    Raises
    ------
    ValueError
        ``scale`` is not positive or ``x`` has the wrong shape.
    """
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    x = _check_inputs(x, model.input_dim).to(model.out_scale.device)
    model.eval()
    z = model.encode(x)
    shift = z.mean(0)
    rms = float((z - shift).pow(2).mean().sqrt())
    model.out_shift.copy_(shift)
    # Degenerate codes (all items identical) cannot be rescaled; keep them centred at zero.
    model.out_scale.fill_(float(scale) / rms if rms > 1e-12 else 1.0)
    return model.embed(x).float()
