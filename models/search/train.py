"""Knowledge distillation of a student from cached teacher probabilities.

Loss = T^2 * KL(softmax(t/T) || softmax(s/T)) + alpha * CE(s, argmax teacher)
where t = log(teacher probabilities) (equal to the teacher logits up to a
per-row constant, so softmax(t/T) is the teacher's tempered softmax).
On-the-fly augmentation: random 90-degree rotation + flip per batch (tissue
class is invariant to them; colour jitter was applied before the teacher
labelled the patches). AdamW + one-cycle cosine schedule, batch 64.
"""
import math
import time

import numpy as np
import torch
import torch.nn.functional as F


def to_tensor(x_uint8):
    return torch.from_numpy(x_uint8).permute(0, 3, 1, 2).float().div_(255.0)


def distill(model, x, p, epochs, seed, bs=64, lr=3e-3, wd=1e-4, T=2.0, alpha=0.2, log=None, weights=None,
            hard=None, geo=True, kd=1.0, logits=False, kd_mask=None):
    """hard: labels for the CE term (default: teacher argmax); geo=False: no on-the-fly rotation/flip, so the
    teacher's soft labels stay those of the exact pixels the student sees; kd: weight of the KL term;
    logits=True: p holds teacher logits rather than probabilities; kd_mask: per-sample bool, KL term only
    where True (samples without a teacher output get the CE term only)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    t_logp = torch.from_numpy(p if logits else np.log(np.clip(p, 1e-30, 1.0))).float()
    hard = t_logp.argmax(1) if hard is None else torch.as_tensor(np.asarray(hard), dtype=torch.long)
    n = len(x)
    steps = epochs * (n // bs)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.15)
    model.train()
    step, t0 = 0, time.time()
    for ep in range(epochs):
        if weights is None:
            perm = torch.randperm(n, generator=g).numpy()
        else:
            perm = rng.choice(n, size=n, replace=True, p=weights / weights.sum())
        tot = 0.0
        for i in range(0, n - bs + 1, bs):
            idx = np.sort(perm[i:i + bs])
            xb = to_tensor(x[idx])
            if geo:
                k = int(rng.integers(4))
                if k:
                    xb = torch.rot90(xb, k, (2, 3))
                if rng.random() < 0.5:
                    xb = torch.flip(xb, (3,))
            s = model.logits(xb)
            tl = t_logp[idx]
            if kd_mask is None:
                kl = F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(tl / T, 1), log_target=True, reduction="batchmean")
            else:
                km = torch.from_numpy(np.asarray(kd_mask)[idx].astype(np.float32))
                kl = (F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(tl / T, 1), log_target=True,
                               reduction="none").sum(1) * km).sum() / len(idx)
            loss = kd * kl * T * T + alpha * F.cross_entropy(s, hard[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            tot += float(loss.detach())
        if log:
            log(f"    epoch {ep + 1}/{epochs} loss {tot / max(1, n // bs):.4f} ({time.time() - t0:.0f}s)")
    model.eval()
    return model


@torch.no_grad()
def predict(model, x, bs=128):
    model.eval()
    out = []
    for i in range(0, len(x), bs):
        out.append(model(to_tensor(x[i:i + bs])).numpy())
    return np.concatenate(out)


def agreement(p_student, p_teacher):
    return float((p_student.argmax(1) == p_teacher.argmax(1)).mean())


def balanced_agreement(p_student, p_teacher, min_count=5):
    """Mean over teacher classes with >= min_count patches of the share the student agrees on
    (a constant predictor scores 1/#classes, whatever the class mix)."""
    cm = confusion(p_teacher, p_student)
    rows = [cm[i, i] / cm[i].sum() for i in range(len(cm)) if cm[i].sum() >= min_count]
    return float(np.mean(rows)) if rows else float("nan")


def class_weights(p_teacher, power=0.5):
    """Per-sample sampling weights ~ count(teacher argmax class)^-power (0 = uniform, 1 = fully balanced)."""
    hard = p_teacher.argmax(1)
    counts = np.bincount(hard, minlength=p_teacher.shape[1]).astype(np.float64)
    return (np.maximum(counts, 1.0) ** -power)[hard]


def confusion(p_teacher, p_student, k=9):
    """rows = teacher argmax, columns = student argmax."""
    m = np.zeros((k, k), dtype=int)
    for a, b in zip(p_teacher.argmax(1), p_student.argmax(1)):
        m[a, b] += 1
    return m
