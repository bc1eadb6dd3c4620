"""The head's AdamW + one-cycle schedule takes the same steps as torch.optim.AdamW under OneCycleLR."""

import torch

from smallvision.engine.head_optim import OneCycleAdamW
from smallvision.models.head import Head


def _train(use_torch: bool, steps: int = 40) -> tuple[dict, list[float]]:
    torch.manual_seed(0)
    head = Head(16, 3, dropout=0.0, hidden=8)
    x, y = torch.randn(64, 16), torch.randint(0, 3, (64,))
    if use_torch:
        opt = torch.optim.AdamW(head.parameters(), lr=3e-3, weight_decay=0.05)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    else:
        opt = OneCycleAdamW(head.parameters(), 3e-3, steps, weight_decay=0.05)
    lrs = []
    for i in range(steps):
        idx = torch.arange(i % 4 * 16, i % 4 * 16 + 16)
        loss = torch.nn.functional.cross_entropy(head(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        if use_torch:
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        else:
            lrs.append(opt.schedule(opt.step_num)[0])
            opt.step()
    return head.state_dict(), lrs


def test_same_trajectory_as_torch_optim():
    ours, our_lrs = _train(False)
    theirs, their_lrs = _train(True)
    assert torch.allclose(torch.tensor(our_lrs, dtype=torch.float64), torch.tensor(their_lrs, dtype=torch.float64))
    assert max(our_lrs) > 2.9e-3 and our_lrs[0] < 2e-4 and our_lrs[-1] < 1e-6
    for name, tensor in theirs.items():
        assert torch.allclose(ours[name], tensor, atol=1e-6), name
    torch.manual_seed(0)
    initial = Head(16, 3, dropout=0.0, hidden=8).state_dict()
    assert all((ours[n] - t).abs().max() > 1e-3 for n, t in initial.items())
