"""Shared test utilities."""
import torch


def dense(fn, shape):
    """Matrix of a linear map on tensors of ``shape`` (batch 1), built from basis vectors (float64)."""
    n = int(torch.tensor(shape).prod())
    basis = torch.eye(n, dtype=torch.float64).view(n, *shape)
    return torch.stack([fn(b[None]).flatten() for b in basis], dim=1)
