"""Dice + cross-entropy that scores coarse ("group") labels over the union of their members.

Some sources label both tibial cartilage plates with one value (schema group ``tibial_cartilage``).
Forcing those voxels into either plate would teach the network a wrong split. Here a voxel with a
group value is scored by the network's summed probability of the group's members: cross-entropy
``-log(p_medial + p_lateral)``, and in a sample that contains the group, Dice on the merged channel.
"""

from __future__ import annotations

import torch


class UnionAwareDiceCELoss(torch.nn.Module):
    def __init__(self, num_classes: int, group_members: dict[int, list[int]], smooth: float = 1e-5):
        super().__init__()
        self.num_classes = num_classes
        self.group_members = {int(k): [int(m) for m in v] for k, v in group_members.items()}
        self.smooth = smooth

    def allowed(self, target: torch.Tensor) -> torch.Tensor:
        """(B, C, ...) float mask: 1 for each class a voxel's label allows."""
        target = target.long()
        plain = target.clamp(max=self.num_classes - 1)
        allowed = torch.nn.functional.one_hot(plain, self.num_classes).movedim(-1, 1).float()
        for group, members in self.group_members.items():
            in_group = (target == group).unsqueeze(1)
            if in_group.any():
                member_mask = torch.zeros(self.num_classes, device=target.device)
                member_mask[members] = 1.0
                allowed = torch.where(in_group, member_mask.view(1, -1, *[1] * (target.dim() - 1)), allowed)
        return allowed

    def channel_blocks(self, target: torch.Tensor) -> list[list[int]]:
        """Channels scored together by Dice: each group present in ``target`` is one block."""
        merged = [members for group, members in self.group_members.items() if (target == group).any()]
        in_blocks = {c for block in merged for c in block}
        return [[c] for c in range(self.num_classes) if c not in in_blocks] + merged

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits (B, C, z, y, x); target (B, z, y, x) or (B, 1, z, y, x) of schema/group values."""
        if target.dim() == logits.dim():
            target = target[:, 0]
        probs = torch.softmax(logits.float(), dim=1)
        allowed = self.allowed(target)
        ce = -torch.log((probs * allowed).sum(dim=1).clamp_min(1e-7)).mean()

        dice_losses = []
        for b in range(logits.shape[0]):
            blocks = self.channel_blocks(target[b])
            p = torch.stack([probs[b, block].sum(0) for block in blocks])
            a = torch.stack([allowed[b, block].amax(0) for block in blocks])
            dims = tuple(range(1, p.dim()))
            intersection = (p * a).sum(dims)
            denominator = p.sum(dims) + a.sum(dims)
            present = a.sum(dims) > 0
            dice = (2 * intersection + self.smooth) / (denominator + self.smooth)
            # Dice over the classes present in this crop; predicting absent classes costs their
            # share of the crop's probability mass instead (absent classes' Dice is undefined).
            absent_penalty = p.sum(dims)[~present].sum() / p[0].numel()
            dice_losses.append(1 - dice[present].mean() + absent_penalty)
        return ce + torch.stack(dice_losses).mean()
