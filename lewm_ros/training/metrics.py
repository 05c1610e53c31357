"""Training metrics: latent statistics, the JSONL metrics log and the PNG curves."""

import json
import logging
import math
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def effective_rank(latents: torch.Tensor) -> float:
    """Return the effective rank of latents ``(N, D)`` (Roy and Vetterli, 2007).

    It is ``exp(H(p))`` with ``p`` the singular values of the centred latents normalised to sum
    to 1 and ``H`` the Shannon entropy: ``D`` for isotropic latents, 1 for latents on a line.
    """
    centred = latents.detach().float() - latents.detach().float().mean(dim=0, keepdim=True)
    singular = torch.linalg.svdvals(centred)
    total = singular.sum()
    if not total > 0:
        return 0.0
    p = singular / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def latent_std_summary(latents: torch.Tensor) -> dict:
    """Return the mean, min and max over dimensions of the per-dimension std of ``(N, D)``."""
    std = latents.detach().float().std(dim=0)
    return {'latent_std_mean': float(std.mean()), 'latent_std_min': float(std.min()),
            'latent_std_max': float(std.max())}


class MetricsLog:
    """Append-only JSON Lines log: one object per record, with ``split`` and ``step`` keys.

    Opening an existing log for a resumed run drops the records after ``resume_step``, so a
    resumed run does not leave duplicate steps behind.
    """

    def __init__(self, path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text('')
        elif self.path.exists():
            kept = [record for record in read_metrics(self.path)
                    if record.get('step', 0) <= resume_step]
            self.path.write_text(''.join(json.dumps(r) + '\n' for r in kept))

    def write(self, record: dict) -> None:
        clean = {key: _json_number(value) for key, value in record.items()}
        with self.path.open('a') as stream:
            stream.write(json.dumps(clean) + '\n')


def _json_number(value):
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path) -> list[dict]:
    """Read a JSON Lines metrics log into a list of records."""
    records = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            records.append(json.loads(line))
    return records


PLOTS = (
    ('pred_loss', 'prediction loss (MSE)', True),
    ('sigreg_loss', 'SIGReg', True),
    ('loss', 'total loss', True),
    ('effective_rank', 'effective rank of the latents', False),
    ('latent_std_mean', 'mean per-dimension latent std', False),
    ('lr', 'learning rate', False),
    ('grad_norm', 'gradient norm (before clipping)', True),
    ('clips_per_s', 'throughput (clips/s)', False),
)


def plot_metrics(metrics_path, output_path) -> Path:
    """Draw the train and validation curves of a metrics log into one PNG (Agg backend)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    columns = 4
    rows = math.ceil(len(PLOTS) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows))
    for axis, (key, title, log_scale) in zip(axes.flat, PLOTS):
        for split, style in (('train', '-'), ('val', 'o-')):
            points = [(r['step'], r[key]) for r in records
                      if r.get('split') == split and r.get(key) is not None]
            if points:
                steps, values = zip(*points)
                axis.plot(steps, values, style, label=split, markersize=3)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel('step')
        if log_scale and any(line.get_ydata().size for line in axis.get_lines()):
            positive = all(min(line.get_ydata()) > 0 for line in axis.get_lines())
            if positive:
                axis.set_yscale('log')
        if axis.get_lines():
            axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    output_path = Path(output_path)
    figure.savefig(output_path, dpi=100)
    plt.close(figure)
    logger.info('wrote training curves to %s', output_path)
    return output_path
