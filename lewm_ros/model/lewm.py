"""``LeWM``: encoder + projector, action embedder, causal AdaLN predictor + projector, loss."""

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from .config import ModelConfig
from .modules import ActionEmbedder, Predictor, Projector, ViTEncoder
from .sigreg import sigreg


class LeWM(nn.Module):
    """LeWorldModel: a JEPA world model that predicts the next frame latent from actions.

    Shapes (``D = config.latent_dim``, ``S = config.image_size``, ``F*A`` the action block size):

    - :meth:`preprocess`: uint8 ``(B, H, W, 3)`` -> float ``(B, 3, S, S)``
    - :meth:`encode`: ``(B, 3, S, S)`` -> ``(B, D)``
    - :meth:`predict`: ``(B, T, D)``, ``(B, T, F*A)`` -> ``(B, T, D)``, causal, ``T <= history``
    - :meth:`rollout`: ``(T, D)``, ``(T-1, F*A)``, ``(N, H, F*A)`` -> ``(N, H, D)``

    The projectors contain BatchNorm: call ``model.eval()`` before inference (a batch of one
    in train mode has no batch statistics). :func:`load_checkpoint` returns an eval model.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        self.encoder = ViTEncoder(c.image_size, c.patch_size, c.encoder_width, c.encoder_depth,
                                  c.encoder_heads, c.encoder_mlp, c.encoder_ln_eps)
        self.projector = Projector(c.encoder_width, c.projector_hidden, c.latent_dim)
        self.action_encoder = ActionEmbedder(c.action_block_dim, c.action_smoothed_dim,
                                             c.action_hidden, c.latent_dim)
        self.predictor = Predictor(c.latent_dim, c.history, c.predictor_depth,
                                   c.predictor_heads, c.predictor_head_dim, c.predictor_mlp,
                                   c.predictor_dropout, c.predictor_emb_dropout)
        self.pred_projector = Projector(c.latent_dim, c.projector_hidden, c.latent_dim)
        self.register_buffer('image_mean', torch.tensor(c.image_mean).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer('image_std', torch.tensor(c.image_std).view(1, 3, 1, 1),
                             persistent=False)

    # ----------------------------------------------------------------------------------------
    # Introspection

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def parameter_counts(self) -> dict:
        """Trainable parameters per component and in total."""
        counts = {name: sum(p.numel() for p in getattr(self, name).parameters())
                  for name in ('encoder', 'projector', 'action_encoder', 'predictor',
                               'pred_projector')}
        counts['total'] = sum(counts.values())
        return counts

    # ----------------------------------------------------------------------------------------
    # Observation side

    def preprocess(self, frames) -> torch.Tensor:
        """Turn RGB uint8 frames into encoder input ``(B, 3, S, S)``.

        ``frames``: ``(B, H, W, 3)`` tensor or array (``(H, W, 3)`` is a batch of one). The
        result is on the model's device and dtype: resized (bilinear, antialiased), scaled to
        [0, 1], normalised with the config mean and std.
        """
        if isinstance(frames, np.ndarray):
            frames = torch.from_numpy(np.ascontiguousarray(frames))
        if frames.dim() == 3:
            frames = frames.unsqueeze(0)
        if frames.dim() != 4 or frames.shape[-1] != 3:
            raise ValueError(f'expected RGB frames (B, H, W, 3), got {tuple(frames.shape)}')
        if frames.dtype != torch.uint8:
            raise ValueError(f'expected uint8 frames, got {frames.dtype}')
        x = frames.to(self.image_mean.device).permute(0, 3, 1, 2).float().div_(255.0)
        size = self.config.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode='bilinear', align_corners=False,
                              antialias=True).clamp_(0.0, 1.0)
        x = (x - self.image_mean.float()) / self.image_std.float()
        return x.to(self.dtype).contiguous()

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Preprocessed pixels ``(B, 3, S, S)`` -> latents ``(B, D)``."""
        return self.projector(self.encoder(pixels))

    def encode_frames(self, frames) -> torch.Tensor:
        """Shortcut: uint8 frames ``(B, H, W, 3)`` -> latents ``(B, D)``."""
        return self.encode(self.preprocess(frames))

    # ----------------------------------------------------------------------------------------
    # Dynamics side

    def predict(self, latents: torch.Tensor, action_blocks: torch.Tensor) -> torch.Tensor:
        """Predict the next latents ``(B, T, D)``.

        From latents ``(B, T, D)`` and normalised action blocks ``(B, T, F*A)``; output ``t``
        only depends on inputs ``0..t``.
        """
        if latents.shape[:2] != action_blocks.shape[:2]:
            raise ValueError(f'latents {tuple(latents.shape)} and action blocks '
                             f'{tuple(action_blocks.shape)} differ in batch or time')
        if action_blocks.shape[-1] != self.config.action_block_dim:
            raise ValueError(f'action blocks must have {self.config.action_block_dim} values '
                             f'(frameskip*A), got {action_blocks.shape[-1]}')
        cond = self.action_encoder(action_blocks)
        return self.pred_projector(self.predictor(latents, cond))

    def rollout(self, history_latents: torch.Tensor, candidates: torch.Tensor,
                history_actions: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the latents of ``N`` candidate action sequences, without re-encoding.

        Args:
            history_latents: observed latents ``(T, D)``, oldest first (``T >= 1``; only the
                last ``history`` are used). A leading batch ``(B, T, D)`` is accepted too.
            candidates: normalised action blocks ``(N, H, F*A)`` (``(B, N, H, F*A)`` with a
                batch); block 0 is applied after the last observed latent.
            history_actions: the ``T-1`` normalised blocks executed between the observed
                latents ``(T-1, F*A)`` (``(B, T-1, F*A)``). Required when ``T > 1``.

        Returns:
            Predicted latents ``(N, H, D)`` (``(B, N, H, D)``): entry ``h`` is the latent after
            blocks ``0..h``. One predictor call per horizon step, over at most ``history``
            tokens per candidate.
        """
        batched = history_latents.dim() == 3
        if not batched:
            history_latents = history_latents.unsqueeze(0)
            candidates = candidates.unsqueeze(0)
            if history_actions is not None:
                history_actions = history_actions.unsqueeze(0)
        if candidates.dim() != 4:
            raise ValueError(f'candidates must be (N, H, F*A) (or (B, N, H, F*A) with batched '
                             f'latents), got {tuple(candidates.shape)}')
        batch, steps, dim = history_latents.shape
        _, num, horizon, block_dim = candidates.shape
        history = self.config.history
        if block_dim != self.config.action_block_dim:
            raise ValueError(f'candidate blocks must have {self.config.action_block_dim} values '
                             f'(frameskip*A), got {block_dim}')
        if steps > 1:
            if history_actions is None:
                raise ValueError(f'{steps} history latents need the {steps - 1} action blocks '
                                 'executed between them (history_actions)')
            if history_actions.shape[-2] != steps - 1:
                raise ValueError(f'history_actions has {history_actions.shape[-2]} blocks for '
                                 f'{steps} latents; expected {steps - 1}')
        # Keep only what the predictor can see: the last `history` latents and the blocks
        # between them.
        keep = min(steps, history)
        latents = history_latents[:, steps - keep:]
        latents = latents.unsqueeze(1).expand(batch, num, keep, dim).reshape(batch * num, keep,
                                                                             dim)
        # Each action block is embedded once (the embedder is per token), and only the last
        # token of each predictor call goes through the output projector.
        cands = self.action_encoder(candidates.reshape(batch * num, horizon, block_dim)
                                    .to(latents.dtype))
        if keep > 1:
            past = history_actions[:, history_actions.shape[1] - (keep - 1):]
            past = self.action_encoder(past.to(latents.dtype))
            past = past.unsqueeze(1).expand(batch, num, keep - 1, dim)
            cond = torch.cat([past.reshape(batch * num, keep - 1, dim), cands[:, :1]], dim=1)
        else:
            cond = cands[:, :1]
        outputs = []
        for h in range(horizon):
            nxt = self.pred_projector(self.predictor(latents, cond)[:, -1:])
            outputs.append(nxt)
            if h + 1 < horizon:
                latents = torch.cat([latents, nxt], dim=1)[:, -history:]
                cond = torch.cat([cond, cands[:, h + 1:h + 2]], dim=1)[:, -history:]
        out = torch.cat(outputs, dim=1).reshape(batch, num, horizon, dim)
        return out if batched else out[0]

    # ----------------------------------------------------------------------------------------
    # Training

    def loss(self, pixels: torch.Tensor, action_blocks: torch.Tensor, *,
             sigreg_weight: float | None = None, generator: torch.Generator | None = None,
             seed: int | None = None) -> dict:
        """Teacher-forced LeWM loss on a clip of ``L = T + 1`` frames.

        Args:
            pixels: preprocessed frames ``(B, L, 3, S, S)`` (uint8 ``(B, L, H, W, 3)`` is
                preprocessed here). ``L - 1`` must be ``<= history``.
            action_blocks: normalised blocks ``(B, L-1, F*A)`` or ``(B, L, F*A)`` (the last
                one is then ignored); NaN (episode ends) are replaced by 0.
            sigreg_weight: lambda; default ``config.sigreg_weight`` (0.09).
            generator, seed: for the SIGReg directions (default: torch's global RNG).

        Returns:
            dict with ``loss`` = ``pred_loss + lambda * sigreg_loss`` (all scalar tensors with
            gradients), ``embeddings`` ``(B, L, D)`` and ``predictions`` ``(B, L-1, D)``.
            The prediction loss is the MSE between the predictor outputs for frames
            ``0..L-2`` and the encoder latents of frames ``1..L-1``; no stop-gradient.
        """
        if pixels.dtype == torch.uint8:
            batch, length = pixels.shape[:2]
            pixels = self.preprocess(pixels.reshape(batch * length, *pixels.shape[2:]))
            pixels = pixels.reshape(batch, length, *pixels.shape[1:])
        batch, length = pixels.shape[:2]
        embeddings = self.encode(pixels.reshape(batch * length, *pixels.shape[2:]))
        return self.latent_loss(embeddings.reshape(batch, length, -1), action_blocks,
                                sigreg_weight=sigreg_weight, generator=generator, seed=seed)

    def latent_loss(self, embeddings: torch.Tensor, action_blocks: torch.Tensor, *,
                    sigreg_weight: float | None = None, generator: torch.Generator | None = None,
                    seed: int | None = None) -> dict:
        """Compute the loss of :meth:`loss` from already encoded frames ``(B, L, D)``.

        Training with a frozen encoder calls this with latents encoded once. The SIGReg term
        then has no gradient, but it is still reported.
        """
        length = embeddings.shape[1]
        if length < 2:
            raise ValueError('a training clip needs at least 2 frames')
        if action_blocks.shape[1] not in (length - 1, length):
            raise ValueError(f'{action_blocks.shape[1]} action blocks for {length} frames')
        actions = torch.nan_to_num(action_blocks[:, :length - 1], nan=0.0).to(embeddings.dtype)
        predictions = self.predict(embeddings[:, :-1], actions)
        pred_loss = F.mse_loss(predictions, embeddings[:, 1:])
        c = self.config
        reg = sigreg(embeddings.transpose(0, 1), c.sigreg_directions, c.sigreg_knots,
                     c.sigreg_t_max, generator=generator, seed=seed)
        weight = c.sigreg_weight if sigreg_weight is None else sigreg_weight
        return {'loss': pred_loss + weight * reg, 'pred_loss': pred_loss, 'sigreg_loss': reg,
                'embeddings': embeddings, 'predictions': predictions}

    # ----------------------------------------------------------------------------------------
    # Action normalisation (delegates to the config)

    def normalize_actions(self, actions):
        return self.config.normalize_actions(actions)

    def denormalize_actions(self, actions):
        return self.config.denormalize_actions(actions)

    def normalize_blocks(self, blocks):
        return self.config.normalize_blocks(blocks)

    def denormalize_blocks(self, blocks):
        return self.config.denormalize_blocks(blocks)


@torch.no_grad()
def recalibrate_batchnorm(model: LeWM, batches) -> LeWM:
    """Recompute the BatchNorm running statistics as exact averages over ``batches``.

    The running statistics are exponential averages (momentum 0.1) that lag a model whose
    weights are still moving fast (short or high-learning-rate runs), and eval-mode inference
    uses them. Call this before saving a checkpoint with a few training batches: each item is
    ``(pixels, action_blocks)`` as for :meth:`LeWM.loss`. Returns the model in eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: the exact mean over all batches
    was_training = model.training
    model.train()
    try:
        for pixels, action_blocks in batches:
            model.loss(pixels, action_blocks)
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.train(was_training)
    return model.eval()
