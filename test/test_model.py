"""LeWM model: sizes, preprocessing, causality, AdaLN-zero, rollout, loss, normalisation."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lewm_ros.model import LeWM, ModelConfig


def tiny_config(**overrides) -> ModelConfig:
    values = dict(image_size=32, patch_size=8, encoder_width=32, encoder_depth=2,
                  encoder_heads=2, encoder_mlp=64, projector_hidden=64, latent_dim=16,
                  predictor_depth=2, predictor_heads=2, predictor_head_dim=8, predictor_mlp=32,
                  action_hidden=32, action_dim=2, frameskip=2, history=3,
                  sigreg_directions=32)
    values.update(overrides)
    return ModelConfig(**values)


def randomised(model: LeWM, seed: int = 0) -> LeWM:
    """Randomise every parameter and the BatchNorm running statistics; eval mode.

    The zero-initialised AdaLN Linears become non-zero too, so tests see real dependencies.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
        for name, buffer in model.named_buffers():
            if name.endswith('running_mean'):
                buffer.copy_(torch.randn(buffer.shape, generator=gen) * 0.1)
            elif name.endswith('running_var'):
                buffer.copy_(torch.rand(buffer.shape, generator=gen) + 0.5)
    return model.eval()


# --------------------------------------------------------------------------------------------
# Sizes and presets

PAPER_COUNTS = {  # research notes section 1.4 (A = 2)
    'encoder': 5_501_376,
    'projector': 792_768,
    'pred_projector': 792_768,
    'predictor': 10_791_360,
    'action_encoder': 156_206,
}


def test_paper_parameter_counts():
    model = LeWM(ModelConfig.preset('paper', action_dim=2))
    counts = model.parameter_counts()
    for name, expected in PAPER_COUNTS.items():
        assert counts[name] == expected, (name, counts[name])
    assert abs(counts['total'] - 18.03e6) / 18.03e6 < 0.01
    assert counts['total'] == sum(p.numel() for p in model.parameters())
    # 16 heads x 64 = 1024 inner width; 224 / 14 = 16 x 16 patches + CLS.
    assert model.predictor.blocks[0].attn.to_qkv.out_features == 3 * 1024
    assert model.encoder.pos_embed.shape == (1, 257, 192)


def test_presets_and_json_round_trip():
    for name in ('paper', 'small'):
        config = ModelConfig.preset(name)
        assert config.preset_name == name
        assert config.preset == name
        again = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
        assert again == config
    small = ModelConfig.preset('small', history=5, action_dim=3, joint_names=['a', 'b', 'c'])
    assert small.history == 5
    assert small.action_block_dim == 3 * small.frameskip
    assert ModelConfig.preset('paper').sigreg_weight == 0.09
    with pytest.raises(ValueError, match='unknown model preset'):
        ModelConfig.preset('huge')
    with pytest.raises(ValueError, match='bogus'):
        ModelConfig.preset('small', bogus=1)
    with pytest.raises(ValueError, match='bogus'):
        ModelConfig.from_dict({**ModelConfig().to_dict(), 'bogus': 1})
    with pytest.raises(ValueError, match='multiple of patch_size'):
        ModelConfig.preset('small', image_size=60)
    with pytest.raises(ValueError, match='action_std'):
        ModelConfig.preset('small', action_std=[1.0, 0.0, 1.0])


# --------------------------------------------------------------------------------------------
# Preprocessing and encoding


def test_preprocess_resizes_scales_and_normalises():
    config = tiny_config()
    model = LeWM(config).eval()
    mean = np.array(config.image_mean)
    std = np.array(config.image_std)
    frame = np.zeros((48, 40, 3), dtype=np.uint8)
    frame[..., 0] = 255
    frame[..., 1] = 128
    out = model.preprocess(frame)  # one (H, W, 3) frame is a batch of one
    assert out.shape == (1, 3, 32, 32)
    assert out.dtype == torch.float32
    expected = (np.array([255, 128, 0]) / 255.0 - mean) / std
    np.testing.assert_allclose(out[0].mean(dim=(1, 2)).numpy(), expected, rtol=1e-5, atol=1e-5)
    batch = torch.from_numpy(np.stack([frame, frame[::-1]]))
    assert model.preprocess(batch).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match='uint8'):
        model.preprocess(torch.zeros(1, 32, 32, 3))
    with pytest.raises(ValueError, match='RGB'):
        model.preprocess(torch.zeros(1, 32, 32, 4, dtype=torch.uint8))


def test_encode_batch_of_one_in_eval_and_batch_independence():
    model = randomised(LeWM(tiny_config()))
    frames = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        latents = model.encode_frames(frames)
        one = model.encode_frames(frames[2:3])
    assert latents.shape == (4, 16)
    assert one.shape == (1, 16)
    torch.testing.assert_close(one[0], latents[2], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match='preprocess'):
        model.encode(torch.zeros(1, 3, 64, 64))


def test_device_and_dtype_are_arguments():
    model = randomised(LeWM(tiny_config())).to(torch.float64)
    frames = torch.randint(0, 256, (2, 20, 20, 3), dtype=torch.uint8)
    with torch.no_grad():
        pixels = model.preprocess(frames)
        latents = model.encode(pixels)
        out = model.rollout(latents, torch.zeros(5, 2, 4), torch.zeros(1, 4))
    assert pixels.dtype == latents.dtype == out.dtype == torch.float64


# --------------------------------------------------------------------------------------------
# Predictor


def test_predictor_is_causal():
    model = randomised(LeWM(tiny_config()))
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn(5, 3, 16, generator=gen)
    actions = torch.randn(5, 3, 4, generator=gen)
    with torch.no_grad():
        base = model.predict(latents, actions)
        for t in range(1, 3):
            changed_latents = latents.clone()
            # (a random change: LayerNorm makes the predictor blind to a constant offset)
            changed_latents[:, t:] += torch.randn(5, 3 - t, 16, generator=gen)
            changed_actions = actions.clone()
            changed_actions[:, t:] += torch.randn(5, 3 - t, 4, generator=gen)
            for out in (model.predict(changed_latents, actions),
                        model.predict(latents, changed_actions)):
                torch.testing.assert_close(out[:, :t], base[:, :t], rtol=0, atol=1e-6)
                assert (out[:, t:] - base[:, t:]).abs().max() > 1e-4  # later ones do change


def test_adaln_zero_makes_fresh_predictor_ignore_actions():
    model = LeWM(tiny_config()).eval()
    for block in model.predictor.blocks:
        assert not block.modulation.weight.any()
        assert not block.modulation.bias.any()
    gen = torch.Generator().manual_seed(2)
    latents = torch.randn(4, 3, 16, generator=gen)
    with torch.no_grad():
        a = model.predict(latents, torch.randn(4, 3, 4, generator=gen))
        b = model.predict(latents, torch.randn(4, 3, 4, generator=gen) * 10)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # ...but a trained (non-zero) modulation does use them.
    model = randomised(model)
    with torch.no_grad():
        c = model.predict(latents, torch.zeros(4, 3, 4))
        d = model.predict(latents, torch.ones(4, 3, 4))
    assert (c - d).abs().max() > 1e-3


def test_history_is_read_from_config():
    for history in (1, 2, 5):
        model = randomised(LeWM(tiny_config(history=history)))
        assert model.predictor.pos_embed.shape[1] == history
        with torch.no_grad():
            assert model.predict(torch.randn(2, history, 16),
                                 torch.randn(2, history, 4)).shape == (2, history, 16)
            with pytest.raises(ValueError, match=f'history={history}'):
                model.predict(torch.randn(2, history + 1, 16), torch.randn(2, history + 1, 4))


def _stepwise_rollout(model, latents, candidates, history_actions):
    """Roll out by hand: one predict call per candidate and step on the explicit window."""
    history = model.config.history
    outs = []
    for cand in candidates:
        zs = list(latents)
        acts = list(history_actions) + [cand[0]]
        preds = []
        for h in range(cand.shape[0]):
            window_z = torch.stack(zs[-history:])[None]
            window_a = torch.stack(acts[-history:])[None]
            nxt = model.predict(window_z, window_a)[0, -1]
            preds.append(nxt)
            zs.append(nxt)
            if h + 1 < cand.shape[0]:
                acts.append(cand[h + 1])
        outs.append(torch.stack(preds))
    return torch.stack(outs)


@pytest.mark.parametrize('observed', [1, 2, 3, 5])
def test_rollout_equals_stepwise_predict(observed):
    model = randomised(LeWM(tiny_config(history=3)))
    gen = torch.Generator().manual_seed(observed)
    latents = torch.randn(observed, 16, generator=gen)
    past = torch.randn(observed - 1, 4, generator=gen)
    candidates = torch.randn(6, 4, 4, generator=gen)
    with torch.no_grad():
        out = model.rollout(latents, candidates, past if observed > 1 else None)
        expected = _stepwise_rollout(model, latents, candidates, past)
    assert out.shape == (6, 4, 16)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_rollout_calls_predictor_once_per_step_and_never_encodes():
    model = randomised(LeWM(tiny_config(history=2)))
    calls = {'predictor': [], 'encoder': 0}
    model.predictor.register_forward_hook(
        lambda module, args, out: calls['predictor'].append(tuple(args[0].shape)))
    model.encoder.register_forward_hook(lambda *a: calls.__setitem__('encoder', 1))
    with torch.no_grad():
        model.rollout(torch.randn(4, 16), torch.randn(300, 5, 4), torch.randn(3, 4))
    assert calls['encoder'] == 0
    assert calls['predictor'] == [(300, 2, 16)] * 5  # at most `history` tokens per call


def test_rollout_batched_equals_unbatched():
    model = randomised(LeWM(tiny_config()))
    gen = torch.Generator().manual_seed(3)
    latents = torch.randn(2, 3, 16, generator=gen)
    past = torch.randn(2, 2, 4, generator=gen)
    cands = torch.randn(2, 5, 3, 4, generator=gen)
    with torch.no_grad():
        out = model.rollout(latents, cands, past)
        assert out.shape == (2, 5, 3, 16)
        for b in range(2):
            torch.testing.assert_close(out[b], model.rollout(latents[b], cands[b], past[b]),
                                       rtol=1e-5, atol=1e-6)


def test_rollout_argument_errors():
    model = LeWM(tiny_config()).eval()
    with pytest.raises(ValueError, match='history_actions'):
        model.rollout(torch.randn(2, 16), torch.randn(3, 2, 4))
    with pytest.raises(ValueError, match='expected 1'):
        model.rollout(torch.randn(2, 16), torch.randn(3, 2, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match='frameskip'):
        model.rollout(torch.randn(1, 16), torch.randn(3, 2, 5))


# --------------------------------------------------------------------------------------------
# Loss


def test_loss_parts_and_gradient_through_targets():
    config = tiny_config(predictor_dropout=0.0)  # deterministic, to compare with by-hand
    model = randomised(LeWM(config)).train()
    gen = torch.Generator().manual_seed(4)
    frames = torch.randint(0, 256, (6, 4, 32, 32, 3), dtype=torch.uint8, generator=gen)
    blocks = torch.randn(6, 4, 4, generator=gen)
    blocks[:, -1] = float('nan')  # the last block of a clip is unused (may be NaN)
    out = model.loss(frames, blocks, seed=0)
    assert set(out) >= {'loss', 'pred_loss', 'sigreg_loss'}
    torch.testing.assert_close(out['loss'], out['pred_loss'] + 0.09 * out['sigreg_loss'])
    assert out['embeddings'].shape == (6, 4, 16)
    assert out['predictions'].shape == (6, 3, 16)
    assert torch.isfinite(out['loss'])
    model.zero_grad()
    out['pred_loss'].backward()
    grad_loss = model.encoder.patch_embed.weight.grad.clone()

    # Same computation by hand, with and without a stop-gradient on the targets.
    pixels = model.preprocess(frames.reshape(24, 32, 32, 3))

    def manual(detach_targets: bool):
        model.zero_grad()
        emb = model.encode(pixels).reshape(6, 4, 16)
        target = emb[:, 1:].detach() if detach_targets else emb[:, 1:]
        F.mse_loss(model.predict(emb[:, :-1], blocks[:, :3]), target).backward()
        return model.encoder.patch_embed.weight.grad.clone()

    torch.testing.assert_close(grad_loss, manual(False), rtol=1e-4, atol=1e-7)
    assert not torch.allclose(grad_loss, manual(True), rtol=1e-3, atol=1e-7)


# --------------------------------------------------------------------------------------------
# Action normalisation


def test_action_normalisation_round_trip_and_blocks():
    config = tiny_config(action_mean=[0.1, -0.2], action_std=[0.5, 2.0], frameskip=3)
    model = LeWM(config)
    raw = torch.tensor([[0.6, 1.8], [0.1, -0.2]])
    norm = model.normalize_actions(raw)
    torch.testing.assert_close(norm, torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
    torch.testing.assert_close(model.denormalize_actions(norm), raw)
    np.testing.assert_allclose(config.normalize_actions(raw.numpy()), norm.numpy(), rtol=1e-6)
    actions = torch.randn(4, 6, 2)  # two blocks of frameskip 3
    blocks = config.actions_to_blocks(actions)
    assert blocks.shape == (4, 2, 6)
    torch.testing.assert_close(blocks[:, 1, 2:4], actions[:, 4])  # [a_t, a_t+1, a_t+2]
    torch.testing.assert_close(config.blocks_to_actions(blocks), actions)
    torch.testing.assert_close(model.normalize_blocks(blocks),
                               config.actions_to_blocks(model.normalize_actions(actions)))
    torch.testing.assert_close(model.denormalize_blocks(model.normalize_blocks(blocks)), blocks)
    with pytest.raises(ValueError, match='last dimension 6'):
        model.normalize_blocks(actions)
    with pytest.raises(ValueError, match='frameskip'):
        config.actions_to_blocks(torch.zeros(5, 2))
