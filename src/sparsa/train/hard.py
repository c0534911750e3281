"""Hard masks: pruned weights that stay exactly zero through training, because nothing can move them.

Three places could bring a pruned weight back, and each is closed:

1. the gradient: a hook on every masked parameter multiplies its gradient by the mask as autograd produces it
   (before clipping, accumulation or the optimizer see it);
2. the optimizer state: momentum and Adam's moments at pruned positions are zeroed whenever a mask is set
   (at the start and at every mask change), so a pruned weight has zero gradient *and* zero state, and every
   standard update rule (SGD with momentum, Adam/AdamW with decoupled decay, ...) maps 0 to exactly 0;
3. the weights themselves are zeroed when a mask is set, so a weight dropped by a mask update is zero at once.

``reapply()`` multiplies the weights by their masks once more after each optimizer step: a guard for
optimizers that are not elementwise (it never changes anything under the standard ones; the tests check that
with it turned off). For RigL-type growth the hook can also keep the dense gradient it masked
(``collect_dense``), since growth ranks pruned weights by the gradient they would have received.
"""

from __future__ import annotations

import torch

from .targets import Target

__all__ = ["HardMasks", "mask_optimizer_state"]


@torch.no_grad()
def mask_optimizer_state(optimizer: torch.optim.Optimizer | None, param: torch.Tensor, mask: torch.Tensor) -> None:
    """Zero every per-element state tensor of ``param`` (same shape) at the pruned positions of ``mask``
    (given in the parameter's layout)."""
    if optimizer is None:
        return
    state = getattr(optimizer, "state", {}).get(param)
    if not state:
        return
    for value in state.values():
        if isinstance(value, torch.Tensor) and value.shape == param.shape:
            value.mul_(mask.to(value.dtype))


class HardMasks:
    """Boolean (out, in) masks over targets, enforced on weights, gradients and optimizer state."""

    def __init__(self, targets: list[Target], masks: dict[str, torch.Tensor], optimizer=None):
        self.targets = {t.name: t for t in targets}
        self.masks: dict[str, torch.Tensor] = {}
        self.optimizer = optimizer
        self.collect_dense = False
        self.dense_grads: dict[str, torch.Tensor] = {}
        self._handles = []
        for t in targets:
            self._handles.append(t.param.register_hook(self._hook(t.name)))
        for name, m in masks.items():
            self.set(name, m)

    def _hook(self, name: str):
        def hook(grad: torch.Tensor) -> torch.Tensor:
            t = self.targets[name]
            mask = t.to_param(self.masks[name])
            if self.collect_dense:  # summed over micro-batches, like the gradient itself
                dense = t.from_param(grad).detach().clone()
                prev = self.dense_grads.get(name)
                self.dense_grads[name] = dense if prev is None else prev + dense
            return grad * mask.to(grad.dtype)

        return hook

    @torch.no_grad()
    def set(self, name: str, mask: torch.Tensor) -> None:
        """Install ``mask`` (bool, (out, in)) for ``name``: weights and optimizer state zeroed where pruned."""
        t = self.targets[name]
        if tuple(mask.shape) != t.shape:
            raise ValueError(f"mask for '{name}' has shape {tuple(mask.shape)}, the weight (out, in) is {t.shape}")
        mask = mask.to(device=t.param.device, dtype=torch.bool).contiguous()
        self.masks[name] = mask
        pm = t.to_param(mask)
        t.param.data.mul_(pm.to(t.param.dtype))
        mask_optimizer_state(self.optimizer, t.param, pm)

    def attach(self, optimizer) -> None:
        """Use ``optimizer`` (its state is masked now and at every mask change)."""
        self.optimizer = optimizer
        for name in self.masks:
            t = self.targets[name]
            mask_optimizer_state(optimizer, t.param, t.to_param(self.masks[name]))

    @torch.no_grad()
    def reapply(self) -> None:
        for name, m in self.masks.items():
            t = self.targets[name]
            t.param.data.mul_(t.to_param(m).to(t.param.dtype))

    def take_dense_grads(self) -> dict[str, torch.Tensor]:
        out, self.dense_grads = self.dense_grads, {}
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
