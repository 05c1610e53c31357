"""LeWM model speed: encoder frames/s and latency, predictor rollout time for planning."""

import os
import statistics
import time


def add_arguments(parser) -> None:
    parser.add_argument('--preset', action='append', choices=('paper', 'small'),
                        help='preset to measure (repeatable; default: small and paper)')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch intra-op threads (default: torch default, i.e. the cores)')
    parser.add_argument('--device', default='cpu', help='torch device (default cpu)')
    parser.add_argument('--batch', type=int, default=32,
                        help='frames per encoder call for the throughput figure (default 32)')
    parser.add_argument('--candidates', type=int, default=300,
                        help='candidate action sequences per rollout (default 300)')
    parser.add_argument('--horizon', type=int, default=5, help='rollout horizon in blocks')
    parser.add_argument('--repeats', type=int, default=10,
                        help='timed repetitions per figure (median reported; default 10)')


def _median_seconds(fn, repeats: int, sync) -> float:
    fn()  # warm-up
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(preset: str, *, device: str = 'cpu', batch: int = 32, candidates: int = 300,
            horizon: int = 5, repeats: int = 10) -> dict:
    """Time one preset; returns a dict of figures (seconds and frames/s)."""
    import torch

    from lewm_ros.model import LeWM, ModelConfig

    config = ModelConfig.preset(preset)
    model = LeWM(config).to(device).eval()
    sync = torch.cuda.synchronize if str(device).startswith('cuda') else (lambda: None)
    gen = torch.Generator().manual_seed(0)
    size = config.image_size
    frames = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, generator=gen)
    one = frames[:1]
    history = config.history
    latents = torch.randn(history, config.latent_dim, generator=gen).to(device)
    past = torch.randn(history - 1, config.action_block_dim, generator=gen).to(device)
    cands = torch.randn(candidates, horizon, config.action_block_dim, generator=gen).to(device)
    step_latents = latents.unsqueeze(0).expand(candidates, -1, -1).contiguous()
    step_actions = torch.randn(candidates, history, config.action_block_dim,
                               generator=gen).to(device)
    with torch.inference_mode():
        encode_batch = _median_seconds(lambda: model.encode_frames(frames), repeats, sync)
        encode_one = _median_seconds(lambda: model.encode_frames(one), repeats, sync)
        rollout = _median_seconds(lambda: model.rollout(latents, cands, past), repeats, sync)
        step = _median_seconds(lambda: model.predict(step_latents, step_actions), repeats, sync)
    return {
        'preset': preset,
        'parameters': model.parameter_counts()['total'],
        'encoder_fps': batch / encode_batch,
        'encoder_batch': batch,
        'encoder_latency_s': encode_one,
        'rollout_s': rollout,
        'predict_call_s': step,
        'candidates': candidates,
        'horizon': horizon,
        'history': history,
    }


def run(args) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    presets = args.preset or ['small', 'paper']
    load = ', '.join(f'{v:.2f}' for v in os.getloadavg())
    print(f'torch {torch.__version__}, device {args.device}, '
          f'{torch.get_num_threads()} intra-op thread(s) of {os.cpu_count()} CPUs, '
          f'load average {load}, median of {args.repeats}')
    for preset in presets:
        r = measure(preset, device=args.device, batch=args.batch, candidates=args.candidates,
                    horizon=args.horizon, repeats=args.repeats)
        print(f'[{preset}] {r["parameters"] / 1e6:.2f} M parameters')
        print(f'  encoder: {r["encoder_fps"]:.1f} frames/s (batch {r["encoder_batch"]}), '
              f'one-frame latency {r["encoder_latency_s"] * 1e3:.2f} ms (preprocess included)')
        print(f'  predictor: one call on {r["candidates"]} candidates x {r["history"]} tokens '
              f'{r["predict_call_s"] * 1e3:.2f} ms; rollout {r["candidates"]} candidates x '
              f'horizon {r["horizon"]} {r["rollout_s"] * 1e3:.2f} ms')
    return 0
