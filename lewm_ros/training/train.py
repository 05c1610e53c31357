"""``lewm train``: train a LeWM preset on an HDF5 episode file.

AdamW with the LeWM defaults (lr 5e-5, weight decay 1e-3), linear warm-up over the first 1 % of
the optimiser steps then cosine decay to 0, gradient clipping at norm 1.0, and bf16 autocast on
CUDA devices that support it. The validation split is by episode. A run directory holds::

    metrics.jsonl       one JSON record per logged train step and per validation
    curves.png          the curves of metrics.jsonl, drawn at the end
    last/               latest checkpoint + training state (resume from here)
    best/               checkpoint with the lowest validation loss
    step_NNNNNN/        periodic checkpoints (the newest --keep-checkpoints are kept)

Every checkpoint directory is a model checkpoint (``model.safetensors`` + ``config.json``, see
``lewm_ros.model.save_checkpoint``) plus ``training_state.safetensors`` and
``training_state.json``.

Multi-GPU: ``torchrun --nproc-per-node=N -m lewm_ros.training.train DATA -o RUN``. Each rank
takes ``batch_size / N`` clips of the same global batch and SIGReg is computed over the global
batch, so the loss and the update do not depend on N.
"""

import argparse
from dataclasses import asdict, dataclass, fields
import json
import logging
import math
import os
from pathlib import Path
import shutil
import time

logger = logging.getLogger(__name__)

LATEST = 'last'
BEST = 'best'
METRICS_FILE = 'metrics.jsonl'
CURVES_FILE = 'curves.png'


@dataclass
class TrainSettings:
    """Settings that shape the optimisation; a resumed run takes them from its checkpoint."""

    data: list = None
    preset: str = 'small'
    model_overrides: dict = None
    steps: int = 0
    epochs: float = 0.0
    batch_size: int = 64
    lr: float = 5e-5
    weight_decay: float = 1e-3
    warmup_fraction: float = 0.01
    grad_clip: float = 1.0
    val_fraction: float = 0.1
    val_batches: int = 4
    seed: int = 0
    bf16: str = 'auto'
    freeze_encoder: bool = False
    init: str = None

    def __post_init__(self) -> None:
        self.model_overrides = dict(self.model_overrides or {})
        if isinstance(self.data, str):
            self.data = [self.data]
        self.data = [str(path) for path in self.data or []]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('data', nargs='+',
                        help='HDF5 episode files (from lewm collect or lewm import-bag); '
                             'several files are trained on as one dataset')
    parser.add_argument('-o', '--output', required=True, help='run directory to write')
    parser.add_argument('--preset', choices=('small', 'paper'),
                        help='model preset (default small)')
    parser.add_argument('--set', action='append', default=[], metavar='FIELD=VALUE',
                        help='override a ModelConfig field, e.g. --set latent_dim=64 '
                             '(repeatable); the value is read as JSON, else as a string')
    parser.add_argument('--history', type=int, help='context frames per clip (preset: 3)')
    parser.add_argument('--frameskip', type=int, help='control steps per action block '
                                                      '(preset: 5)')
    parser.add_argument('--lambda', dest='sigreg_weight', type=float,
                        help='SIGReg weight lambda (preset: 0.09)')
    length = parser.add_mutually_exclusive_group()
    length.add_argument('--steps', type=int, default=0, help='optimiser steps')
    length.add_argument('--epochs', type=float, default=0.0,
                        help='passes over the training clips (default 10 when --steps is '
                             'not given)')
    parser.add_argument('--batch-size', type=int, default=64,
                        help='clips per optimiser step over all ranks (default 64)')
    parser.add_argument('--lr', type=float, default=5e-5, help='peak learning rate')
    parser.add_argument('--weight-decay', type=float, default=1e-3,
                        help='AdamW weight decay')
    parser.add_argument('--warmup-fraction', type=float, default=0.01,
                        help='fraction of the steps with linear warm-up')
    parser.add_argument('--grad-clip', type=float, default=1.0,
                        help='gradient norm clip, 0 disables it')
    parser.add_argument('--val-fraction', type=float, default=0.1,
                        help='fraction of the episodes held out for validation')
    parser.add_argument('--val-batches', type=int, default=4,
                        help='validation batches per validation (default 4)')
    parser.add_argument('--val-every', type=int, default=0,
                        help='validate every N steps (default: 20 times per run)')
    parser.add_argument('--log-every', type=int, default=10,
                        help='write a train record every N steps (default 10)')
    parser.add_argument('--save-every', type=int, default=0,
                        help='write a checkpoint every N steps (default: at each validation)')
    parser.add_argument('--keep-checkpoints', type=int, default=2,
                        help='periodic step_N checkpoints to keep (default 2)')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the split, the initialisation and the sampling')
    parser.add_argument('--bf16', choices=('auto', 'on', 'off'), default='auto',
                        help='bf16 autocast: auto uses it on CUDA devices with bf16 support')
    parser.add_argument('--init', metavar='CHECKPOINT',
                        help='start from the weights, model settings and action statistics of '
                             'this checkpoint (--preset, --set, --history, --frameskip and '
                             '--lambda are rejected with it)')
    parser.add_argument('--freeze-encoder', action='store_true',
                        help='train only the action encoder and predictor; the image encoder '
                             'and its projector keep their initial weights, and every frame is '
                             'encoded once before the first step. With --init this trains a '
                             'new predictor for a trained encoder; without it, it is a '
                             'diagnostic on an untrained encoder')
    parser.add_argument('--resume', metavar='CHECKPOINT',
                        help='continue a run from one of its checkpoints (e.g. RUN/last); the '
                             'settings stored there replace the ones given here')
    parser.add_argument('--device', default=None,
                        help='torch device (default: cuda when available, else cpu)')
    parser.add_argument('--threads', type=int, default=0,
                        help='torch intra-op threads (default: torch default)')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress bar')


def parse_overrides(items) -> dict:
    """Parse ``FIELD=VALUE`` strings into ModelConfig overrides (values read as JSON)."""
    from lewm_ros.model import ModelConfig

    known = {f.name for f in fields(ModelConfig)}
    overrides = {}
    for item in items:
        name, separator, text = item.partition('=')
        name = name.strip()
        if not separator or not name:
            raise ValueError(f'--set {item!r} is invalid; write FIELD=VALUE, e.g. '
                             '--set latent_dim=64')
        if name not in known:
            raise ValueError(f'--set {name}: unknown ModelConfig field; known fields: '
                             f'{", ".join(sorted(known))}')
        try:
            overrides[name] = json.loads(text)
        except json.JSONDecodeError:
            overrides[name] = text
    return overrides


# Model settings that have an option of their own, named in error messages.
MODEL_OPTIONS = {'history': '--history', 'frameskip': '--frameskip', 'sigreg_weight': '--lambda'}


def settings_from_args(args) -> TrainSettings:
    """Build the run settings; raise ValueError for options that exclude each other."""
    overrides = parse_overrides(args.set)
    model_options = [f'--set {name}' for name in overrides]
    for key, option in MODEL_OPTIONS.items():
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
            model_options.append(option)
    if args.preset:
        model_options.append('--preset')

    if args.init and args.resume:
        raise ValueError('--init and --resume exclude each other, because a resumed run '
                         'continues from its own checkpoint')
    if args.init and model_options:
        raise ValueError(f'--init {args.init} takes the model settings from the checkpoint; '
                         f'drop {", ".join(model_options)}')
    return TrainSettings(
        data=list(args.data), preset=args.preset or 'small', model_overrides=overrides,
        steps=args.steps, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, warmup_fraction=args.warmup_fraction,
        grad_clip=args.grad_clip, val_fraction=args.val_fraction,
        val_batches=args.val_batches, seed=args.seed, bf16=args.bf16,
        freeze_encoder=args.freeze_encoder, init=args.init)


def check_settings(settings: TrainSettings) -> None:
    """Raise ValueError naming every invalid setting."""
    problems = []
    if settings.steps < 0 or settings.epochs < 0:
        problems.append('--steps and --epochs must be >= 0')
    if settings.batch_size < 1:
        problems.append(f'--batch-size must be >= 1, got {settings.batch_size}')
    if not settings.lr > 0:
        problems.append(f'--lr must be > 0, got {settings.lr}')
    if settings.weight_decay < 0:
        problems.append(f'--weight-decay must be >= 0, got {settings.weight_decay}')
    if not 0 <= settings.warmup_fraction < 1:
        problems.append(f'--warmup-fraction must be in [0, 1), got {settings.warmup_fraction}')
    if settings.grad_clip < 0:
        problems.append(f'--grad-clip must be >= 0, got {settings.grad_clip}')
    if not 0 <= settings.val_fraction < 1:
        problems.append(f'--val-fraction must be in [0, 1), got {settings.val_fraction}')
    if problems:
        raise ValueError('; '.join(problems))


def lr_factor(step: int, total: int, warmup_fraction: float) -> float:
    """Return the learning-rate multiplier of optimiser step ``step`` (0-based).

    Linear warm-up from 0 over ``ceil(warmup_fraction * total)`` steps, then cosine decay that
    reaches 0 after the last step.
    """
    warmup = math.ceil(warmup_fraction * total)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup + 1) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class ClipBatches:
    """Deterministic batches of clip indices: one seeded permutation per epoch.

    Batch ``step`` depends only on the seed and the step, so a resumed run draws the same
    batches as an uninterrupted one. Each rank takes its contiguous share of the global batch.
    """

    def __init__(self, num_clips: int, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1) -> None:
        if num_clips < batch_size:
            raise ValueError(f'the training split has {num_clips} clips, fewer than the batch '
                             f'size {batch_size}; lower --batch-size or record more data')
        if batch_size % world_size:
            raise ValueError(f'--batch-size {batch_size} is not divisible by the {world_size} '
                             'ranks')
        self.num_clips, self.batch_size, self.seed = num_clips, batch_size, seed
        self.steps_per_epoch = num_clips // batch_size
        self.local = batch_size // world_size
        self.rank = rank
        self._epoch, self._order = None, None

    def indices(self, step: int):
        import numpy as np

        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._order = np.random.default_rng([self.seed, epoch]).permutation(self.num_clips)
            self._epoch = epoch
        start = position * self.batch_size + self.rank * self.local
        return self._order[start:start + self.local]


class Trainer:
    """One training run: data, model, optimiser, schedule, logging and checkpoints."""

    def __init__(self, settings: TrainSettings, output, *, resume=None, device=None,
                 log_every: int = 10, val_every: int = 0, save_every: int = 0,
                 keep_checkpoints: int = 2, progress: bool = True) -> None:
        import torch

        self.output = Path(output)
        self.resume = Path(resume) if resume else None
        self.log_every = max(1, int(log_every))
        self.keep_checkpoints = max(0, int(keep_checkpoints))
        self.progress = progress
        self._setup_distributed(device)

        resume_document = None
        if self.resume is not None:
            resume_document = self._read_resume_settings()
            settings = TrainSettings(**resume_document['settings'])
        check_settings(settings)
        self.settings = settings
        self.init_config = None
        if settings.init:
            from lewm_ros.model import read_checkpoint_config

            # A resumed run's checkpoint contains the same statistics and clip shape, so the
            # --init checkpoint need not exist any more.
            self.init_config = read_checkpoint_config(self.resume or settings.init)['model']

        self._load_data()
        self.total_steps = self._total_steps()
        self.val_every = int(val_every) or max(1, self.total_steps // 20)
        self.save_every = int(save_every) or self.val_every
        self._build_model()
        if settings.freeze_encoder:
            self._encode_once()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=settings.lr,
                                           weight_decay=settings.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda step: lr_factor(step, self.total_steps, settings.warmup_fraction))
        self.start_step = 0
        self.best_val = math.inf
        if self.resume is not None:
            self._restore()
        self._wrap_ddp()

    # ------------------------------------------------------------------------------- setup

    def _setup_distributed(self, device) -> None:
        import torch
        import torch.distributed as dist

        self.world_size = int(os.environ.get('WORLD_SIZE', '1'))
        self.rank = int(os.environ.get('RANK', '0'))
        local_rank = int(os.environ.get('LOCAL_RANK', '0'))
        if device is None:
            device = f'cuda:{local_rank}' if torch.cuda.is_available() else 'cpu'
        self.device = torch.device(device)
        if self.device.type == 'cuda' and self.device.index is None:
            self.device = torch.device('cuda', local_rank)
        if self.device.type == 'cuda':
            torch.cuda.set_device(self.device)
        if self.world_size > 1 and not dist.is_initialized():
            backend = 'nccl' if self.device.type == 'cuda' else 'gloo'
            dist.init_process_group(backend=backend)
        self.distributed = self.world_size > 1
        self.is_main = self.rank == 0

    def _read_resume_settings(self) -> dict:
        path = self.resume / 'training_state.json'
        if not path.is_file():
            raise FileNotFoundError(
                f'{self.resume} has no training_state.json; resume from a checkpoint written '
                'by lewm train, such as <run>/last')
        document = json.loads(path.read_text())
        return document['extra']

    def _load_data(self) -> None:
        import torch.distributed as dist

        from lewm_ros.training.data import EpisodeFiles, split_episodes

        settings = self.settings
        # Rank 0 loads first because loading may store action statistics in the files, and an
        # HDF5 file open for writing cannot be opened by another process (errno 11).
        if self.distributed and not self.is_main:
            dist.barrier()
        try:
            self.files = EpisodeFiles(settings.data)
            if self.init_config is not None:
                self._adopt_init_statistics()
            self.train_episodes, self.val_episodes = split_episodes(
                self.files.num_episodes, settings.val_fraction, settings.seed)
            history, frameskip = self._clip_shape()
            # With a frozen encoder, training reads latents encoded once from the files, so
            # the clips need not keep the pixels in RAM as well.
            in_memory = False if settings.freeze_encoder else None
            self.train_set = self.files.clips(self.train_episodes, history, frameskip,
                                              in_memory)
            self.val_set = None
            if self.val_episodes:
                self.val_set = self.files.clips(self.val_episodes, history, frameskip,
                                                in_memory)
        finally:
            # Also after an error, so that the other ranks load, meet the same error and exit.
            if self.distributed and self.is_main:
                dist.barrier()
        if self.train_set is None:
            raise ValueError(f'{", ".join(settings.data)}: no training episode has the '
                             f'{(history + 1) * frameskip} steps a clip needs; record longer '
                             'episodes or lower --history or --frameskip')
        logger.info('data %s: %d episodes (%d train, %d validation), %d training clips of %d '
                    'frames', ', '.join(settings.data), self.files.num_episodes,
                    len(self.train_episodes), len(self.val_episodes), len(self.train_set),
                    history + 1)

    def _adopt_init_statistics(self) -> None:
        """Normalise actions as the --init checkpoint does. Its joints must be the data's."""
        config, data = self.init_config, self.files
        if list(config['joint_names']) != data.joint_names:
            raise ValueError(f'--init {self.settings.init} controls joints '
                             f'{config["joint_names"]}, the data has {data.joint_names}; '
                             'train from scratch or record the same joints')
        if abs(float(config['control_period']) - data.control_period) > 1e-9:
            raise ValueError(f'--init {self.settings.init} has control period '
                             f'{config["control_period"]} s, the data '
                             f'{data.control_period} s; record at the checkpoint\'s rate')
        data.action_mean = [float(v) for v in config['action_mean']]
        data.action_std = [float(v) for v in config['action_std']]

    def _clip_shape(self) -> tuple[int, int]:
        from lewm_ros.model import PRESETS

        if self.init_config is not None:
            return int(self.init_config['history']), int(self.init_config['frameskip'])
        overrides = self.settings.model_overrides
        preset = PRESETS[self.settings.preset]
        return (int(overrides.get('history', preset['history'])),
                int(overrides.get('frameskip', preset['frameskip'])))

    def _total_steps(self) -> int:
        settings = self.settings
        steps_per_epoch = len(self.train_set) // settings.batch_size
        if settings.steps:
            return settings.steps
        epochs = settings.epochs or 10.0
        return max(1, int(round(epochs * steps_per_epoch)))

    def _build_model(self) -> None:
        import torch

        from lewm_ros.model import LeWM, load_checkpoint, ModelConfig

        data = self.files
        torch.manual_seed(self.settings.seed)
        if self.resume is not None:
            self.model = load_checkpoint(self.resume, device=self.device)
            if self.model.config.data_fingerprint != data.fingerprint:
                raise ValueError(
                    f'{self.resume} was trained on data with fingerprint '
                    f'{self.model.config.data_fingerprint[:12]}, but {self.settings.data} has '
                    f'{data.fingerprint[:12]}; resume with the same episode files')
        elif self.settings.init:
            self.model = load_checkpoint(self.settings.init, device=self.device)
            self.model.config = self.model.config.replace(data_fingerprint=data.fingerprint)
        else:
            overrides = dict(self.settings.model_overrides)
            config = ModelConfig.preset(
                self.settings.preset, **{
                    **overrides,
                    'action_dim': len(data.joint_names),
                    'action_mean': [float(v) for v in data.action_mean],
                    'action_std': [float(v) for v in data.action_std],
                    'joint_names': data.joint_names,
                    'control_period': data.control_period,
                    'data_fingerprint': data.fingerprint,
                })
            self.model = LeWM(config).to(self.device)
        frame_size = data.frame_shape[0]
        if frame_size != self.model.config.image_size:
            logger.info('frames of %d px are resized to the model image size %d px',
                        frame_size, self.model.config.image_size)
        if self.settings.freeze_encoder:
            for module in (self.model.encoder, self.model.projector):
                module.requires_grad_(False)
        self.model.train()
        counts = self.model.parameter_counts()
        logger.info('model: preset %s, %.3f M parameters', self.model.config.preset,
                    counts['total'] / 1e6)
        self.use_bf16 = self._bf16_enabled()

    def _encode_once(self) -> None:
        """With a frozen encoder, train on latents encoded once instead of on pixels."""
        from lewm_ros.model import recalibrate_batchnorm
        from lewm_ros.training.data import encode_episode_files, LatentClipSet

        model = self.model
        if not (self.settings.init or self.resume):
            # An untrained projector has no running statistics yet: measure them exactly over
            # the first training batches, so that the frozen latents have their data scale.
            batches = ClipBatches(len(self.train_set), self.settings.batch_size,
                                  self.settings.seed)
            recalibrate_batchnorm(model, (self.train_set.batch(batches.indices(step))
                                          for step in range(8)))
        start = time.perf_counter()
        model.eval()
        latents = encode_episode_files(self.settings.data, model.encode_frames)
        model.train()
        self.train_set = LatentClipSet(self.train_set, latents)
        if self.val_set is not None:
            self.val_set = LatentClipSet(self.val_set, latents)
        logger.info('frozen encoder: encoded %d frames in %.0f s', sum(map(len, latents.values())),
                    time.perf_counter() - start)

    def _bf16_enabled(self) -> bool:
        import torch

        mode = self.settings.bf16
        if mode == 'off':
            return False
        if mode == 'on':
            return True
        return self.device.type == 'cuda' and torch.cuda.is_bf16_supported()

    def _restore(self) -> None:
        from lewm_ros.training.state import load_training_state

        restored = load_training_state(self.resume, self.optimizer, self.scheduler)
        self.start_step = restored['step']
        self.best_val = restored['extra'].get('best_val') or math.inf
        logger.info('resumed from %s at step %d of %d', self.resume, self.start_step,
                    self.total_steps)

    def _wrap_ddp(self) -> None:
        import torch

        self.loss_module = _make_loss_module(self.model)
        if self.distributed:
            ids = [self.device.index] if self.device.type == 'cuda' else None
            if self.device.type == 'cuda':
                self.loss_module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(
                    self.loss_module)
            self.loss_module = torch.nn.parallel.DistributedDataParallel(
                self.loss_module, device_ids=ids)

    # ------------------------------------------------------------------------------- loop

    def train(self) -> dict:
        """Run from the current step to the last one; return the final metrics."""
        from tqdm import tqdm

        from lewm_ros.training.metrics import MetricsLog, plot_metrics

        settings = self.settings
        batches = ClipBatches(len(self.train_set), settings.batch_size, settings.seed,
                              self.rank, self.world_size)
        log = None
        if self.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
            log = MetricsLog(self.output / METRICS_FILE,
                             resume_step=self.start_step if self.resume else None)
        bar = tqdm(total=self.total_steps, initial=self.start_step, unit='step',
                   disable=not (self.progress and self.is_main), dynamic_ncols=True)
        window_start, window_clips = time.perf_counter(), 0
        last = {}
        for step in range(self.start_step, self.total_steps):
            frames, actions = self.train_set.batch(batches.indices(step))
            lr = self.scheduler.get_last_lr()[0]
            out, grad_norm = self._train_step(frames, actions, step)
            window_clips += settings.batch_size
            bar.update(1)
            done = step + 1
            if done % self.log_every == 0 or done == self.total_steps:
                record = self._train_record(out, grad_norm, done, batches)
                record['lr'] = lr
                elapsed = time.perf_counter() - window_start
                record['clips_per_s'] = window_clips / max(elapsed, 1e-9)
                window_start, window_clips = time.perf_counter(), 0
                last = record
                bar.set_postfix(pred=f'{record["pred_loss"]:.4f}',
                                sigreg=f'{record["sigreg_loss"]:.3f}',
                                lr=f'{record["lr"]:.2e}')
                if log is not None:
                    log.write(record)
            is_val = done % self.val_every == 0 or done == self.total_steps
            if is_val and self.val_set is not None:
                val = self.validate(done)
                last.update({f'val_{k}': v for k, v in val.items() if k not in ('step',
                                                                                'split')})
                if log is not None:
                    log.write(val)
                if val['loss'] < self.best_val:
                    self.best_val = val['loss']
                    self._save(BEST, done)
            if done % self.save_every == 0 or done == self.total_steps:
                self._save(LATEST, done)
                if done < self.total_steps and self.keep_checkpoints:
                    self._save(f'step_{done:06d}', done)
                    self._prune()
        bar.close()
        if self.distributed:
            self._check_replicas()
        if self.is_main and self.val_set is None:
            self._save(BEST, self.total_steps)
        if self.is_main:
            plot_metrics(self.output / METRICS_FILE, self.output / CURVES_FILE)
        return last

    def _set_train_mode(self) -> None:
        self.loss_module.train()

    def _train_step(self, frames, actions, step: int):
        import torch

        self._set_train_mode()
        frames = frames.to(self.device, non_blocking=True)
        actions = actions.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            out = self.loss_module(frames, actions, self._sigreg_seed(step))
        out['loss'].backward()
        clip = self.settings.grad_clip
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        if clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(parameters, clip)
        else:
            grad_norm = torch.nn.utils.clip_grad_norm_(parameters, math.inf)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return out, float(grad_norm)

    def _sigreg_seed(self, step: int, validation: bool = False) -> int:
        # Directions depend only on the seed and the step, so resumption is exact without
        # saving a generator; validation uses one fixed draw so values compare over time.
        return (self.settings.seed * 1_000_003 + (-1 if validation else step)) % (2**62)

    def _check_replicas(self) -> None:
        """Raise RuntimeError when any parameter differs from rank 0's copy."""
        import torch
        import torch.distributed as dist

        differing = 0
        for parameter in self.model.parameters():
            reference = parameter.detach().clone()
            dist.broadcast(reference, src=0)
            differing += int(not torch.equal(reference, parameter.detach()))
        count = torch.tensor([differing], device=self.device)
        dist.all_reduce(count)
        if int(count.item()):
            raise RuntimeError(f'{int(count.item())} parameter tensors differ between the '
                               f'{self.world_size} ranks after training')
        if self.is_main:
            logger.info('all %d ranks hold identical parameters', self.world_size)

    def _reduce_mean(self, value: float) -> float:
        if not self.distributed:
            return value
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world_size

    def _train_record(self, out, grad_norm: float, step: int, batches: ClipBatches) -> dict:
        from lewm_ros.training.metrics import effective_rank, latent_std_summary

        latents = out['embeddings'].detach().float().reshape(-1, out['embeddings'].shape[-1])
        record = {
            'split': 'train', 'step': step,
            'epoch': step / batches.steps_per_epoch,
            'loss': self._reduce_mean(float(out['loss'].detach())),
            'pred_loss': self._reduce_mean(float(out['pred_loss'].detach())),
            'sigreg_loss': float(out['sigreg_loss'].detach()),
            'grad_norm': grad_norm,
            'effective_rank': effective_rank(latents),
            'time': time.time(),
        }
        record.update(latent_std_summary(latents))
        return record

    def validate(self, step: int) -> dict:
        """Return the validation losses and latent statistics on a fixed set of clips."""
        import numpy as np
        import torch

        from lewm_ros.training.metrics import effective_rank, latent_std_summary

        settings = self.settings
        count = min(len(self.val_set), settings.val_batches * settings.batch_size)
        count -= count % self.world_size
        order = np.random.default_rng([settings.seed, 7]).permutation(len(self.val_set))
        chosen = order[:count]
        local = count // self.world_size
        mine = chosen[self.rank * local:(self.rank + 1) * local]
        totals = {'loss': 0.0, 'pred_loss': 0.0, 'sigreg_loss': 0.0}
        latents = []
        batch = max(1, settings.batch_size // self.world_size)
        chunks = [mine[i:i + batch] for i in range(0, len(mine), batch)]
        self.loss_module.eval()
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                             enabled=self.use_bf16):
            for chunk in chunks:
                frames, actions = self.val_set.batch(chunk)
                out = self.loss_module(frames.to(self.device), actions.to(self.device),
                                       self._sigreg_seed(step, validation=True))
                for key in totals:
                    totals[key] += float(out[key]) / len(chunks)
                latents.append(out['embeddings'].float().reshape(-1, out['embeddings'].shape[-1]))
        self._set_train_mode()
        record = {'split': 'val', 'step': step}
        for key, value in totals.items():
            record[key] = self._reduce_mean(value) if key != 'sigreg_loss' else value
        record['loss'] = record['pred_loss'] + self.model.config.sigreg_weight * \
            record['sigreg_loss']
        all_latents = torch.cat(latents)
        record['effective_rank'] = effective_rank(all_latents)
        record.update(latent_std_summary(all_latents))
        return record

    # ------------------------------------------------------------------------------- checkpoints

    def _save(self, name: str, step: int) -> None:
        if not self.is_main:
            return
        from lewm_ros.model import save_checkpoint
        from lewm_ros.training.state import save_training_state

        directory = self.output / name
        training = {
            'step': step, 'total_steps': self.total_steps, 'data': self.settings.data,
            'train_episodes': len(self.train_episodes),
            'val_episodes': self.val_episodes,
            'world_size': self.world_size,
            'init': self.settings.init, 'frozen_encoder': self.settings.freeze_encoder,
        }
        save_checkpoint(self.model, directory, training=training)
        save_training_state(directory, self.optimizer, self.scheduler, step,
                            extra={'settings': asdict(self.settings),
                                   'best_val': self.best_val if math.isfinite(self.best_val)
                                   else None})

    def _prune(self) -> None:
        periodic = sorted(self.output.glob('step_*'))
        for directory in periodic[:-self.keep_checkpoints]:
            shutil.rmtree(directory, ignore_errors=True)

    def close(self, finished: bool = False) -> None:
        """Leave the process group; after a finished run, wait for every rank first."""
        import torch.distributed as dist

        if self.distributed and dist.is_initialized():
            if finished:
                # Rank 0 is still writing checkpoints when the others finish. Without this
                # barrier, a rank that left its gloo group early was sometimes aborted at exit.
                dist.barrier()
            dist.destroy_process_group()


def _make_loss_module(model):
    import torch

    class LossModule(torch.nn.Module):
        """Wraps ``LeWM.loss`` as ``forward`` so that DDP wraps the whole forward pass."""

        def __init__(self, model) -> None:
            super().__init__()
            self.model = model

        def forward(self, frames, actions, seed: int) -> dict:
            # Frames are pixels (B, L, ...) or, with a frozen encoder, latents (B, L, D).
            if frames.dim() == 3:
                out = self.model.latent_loss(frames, actions, seed=seed)
            else:
                out = self.model.loss(frames, actions, seed=seed)
            keys = ('loss', 'pred_loss', 'sigreg_loss', 'embeddings')
            return {key: out[key] for key in keys}

    return LossModule(model)


def run(args) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        settings = settings_from_args(args)
        trainer = Trainer(settings, args.output, resume=args.resume, device=args.device,
                          log_every=args.log_every, val_every=args.val_every,
                          save_every=args.save_every, keep_checkpoints=args.keep_checkpoints,
                          progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as error:
        logger.error('%s', error)
        return 2
    if trainer.start_step >= trainer.total_steps:
        logger.info('%s is at step %d of %d: nothing to train. To train further, start a new '
                    'run with --init %s', args.resume, trainer.start_step, trainer.total_steps,
                    args.resume)
        trainer.close(finished=True)
        return 0
    start = time.perf_counter()
    finished = False
    try:
        final = trainer.train()
        finished = True
    finally:
        trainer.close(finished=finished)
    if trainer.is_main:
        minutes = (time.perf_counter() - start) / 60
        summary = ', '.join(f'{k} {v:.4g}' for k, v in final.items()
                            if isinstance(v, float) and k != 'time')
        logger.info('trained %d steps in %.1f min: %s', trainer.total_steps, minutes, summary)
        logger.info('checkpoints: %s (latest), %s (best validation loss)',
                    Path(args.output) / LATEST, Path(args.output) / BEST)
    return 0


def main(argv=None) -> int:
    """Entry point for ``torchrun -m lewm_ros.training.train``."""
    parser = argparse.ArgumentParser(prog='lewm train', description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='[%(levelname)s] [%(name)s] %(message)s')
    return run(args)


if __name__ == '__main__':
    raise SystemExit(main())
