"""Augmentation and sampling on whole batches of tensors, on the batch's own device."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def jitter(x: torch.Tensor, pixels: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image by its own random offset in [-pixels, pixels], filling with zeros.

    x: (B, C, H, W). One gather for the whole batch; no per-image Python loop.
    """
    if pixels <= 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (pixels, pixels, pixels, pixels))
    dy = torch.randint(0, 2 * pixels + 1, (b, 1), generator=gen, device=gen.device if gen else None)
    dx = torch.randint(0, 2 * pixels + 1, (b, 1), generator=gen, device=gen.device if gen else None)
    dy, dx = dy.to(x.device), dx.to(x.device)
    rows = dy + torch.arange(h, device=x.device)  # (B, H)
    cols = dx + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


def hflip(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """Mirror a random half of the batch left-right. x: (B, C, H, W)."""
    flip = torch.rand(x.shape[0], generator=gen, device=gen.device if gen else None) < 0.5
    flip = flip.to(x.device)[:, None, None, None]
    return torch.where(flip, x.flip(-1), x)


def epoch_order(
    labels: torch.Tensor, oversample: bool, gen: torch.Generator | None = None
) -> torch.Tensor:
    """Indices for one epoch: a permutation, or class-balanced when ``oversample``.

    Balanced: every class contributes as many draws as the largest class has images (each
    class's own images in random order, repeated as needed), then all are shuffled together.
    """
    device = gen.device if gen else None
    if not oversample:
        return torch.randperm(len(labels), generator=gen, device=device)
    labels = labels.to(device)
    counts = torch.bincount(labels)
    target = int(counts.max())
    parts = []
    for c in torch.nonzero(counts).flatten().tolist():
        members = torch.nonzero(labels == c).flatten()
        reps = -(-target // len(members))  # ceil
        order = torch.cat(
            [
                members[torch.randperm(len(members), generator=gen, device=device)]
                for _ in range(reps)
            ]
        )
        parts.append(order[:target])
    idx = torch.cat(parts)
    return idx[torch.randperm(len(idx), generator=gen, device=device)]
