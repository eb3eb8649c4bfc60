"""BYE scoring cost vs one plain eager forward over the same batches, and attention memory hooks vs
``output_attentions``.  Model: the LLaVA with the real SmolLM2 decoder (``--tiny``: a 4-layer config model).

    python benchmarks/bye_bench.py [--n 64] [--batch 16] [--repeats 3] [--tiny]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

torch.set_num_threads(1)


def _model_and_inputs(args: argparse.Namespace) -> tuple[Any, Callable, list]:
    """The model, its collate function ``(images, questions) -> inputs`` and ``args.n`` random images."""
    rng = np.random.default_rng(0)
    if args.tiny:
        from hf_trust.demo.studies import bye as toy

        images = list(rng.integers(0, 255, (args.n, toy.IMG, toy.IMG)).astype(np.uint8))
        return toy.make_tiny_llava(0), toy.collate, images
    from hf_trust.assets import llava_num_image_tokens, load_llava_smollm2
    from hf_trust.demo.studies.bye import Codec

    model, tok, img_id = load_llava_smollm2()
    codec = Codec(tok, img_id, llava_num_image_tokens(model))
    return model, codec.prompt_batch, list(rng.integers(0, 255, (args.n, 32, 32)).astype(np.uint8))


def _timings(model: Any, collate: Callable, batches: list, repeats: int) -> tuple[list, list, list]:
    """Per repeat: seconds of plain eager forwards, seconds of BYE scoring, and their ratio."""
    from hf_trust.filters import BYEFilter

    bye = BYEFilter(model, collate_fn=collate, batch_size=len(batches[0]))

    def plain() -> None:
        with torch.no_grad():
            for b in batches:
                model(**collate(b, None), use_cache=False)

    def scored() -> None:
        for b in batches:
            bye.entropy_batch(b, [""] * len(b))

    plain(), scored()  # warm-up
    t_plain, t_bye, ratios = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        plain()
        t1 = time.perf_counter()
        scored()
        t2 = time.perf_counter()
        t_plain.append(t1 - t0)
        t_bye.append(t2 - t1)
        ratios.append((t2 - t1) / (t1 - t0))
    return t_plain, t_bye, ratios


def _attention_bytes(model: Any, inputs: dict) -> tuple[int, int]:
    """Bytes of attention kept for one batch: ``output_attentions`` vs the capture hooks."""
    from hf_trust.filters.capture import capture_rows

    with torch.no_grad():
        out = model(**inputs, output_attentions=True, use_cache=False)
        att_bytes = sum(a.numel() * a.element_size() for a in out.attentions)
        del out
        with capture_rows(model, inputs["attention_mask"]) as cap:
            model(**inputs, use_cache=False)
        hook_bytes = sum(r.numel() * r.element_size() for r in cap.rows)
    return att_bytes, hook_bytes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    model, collate, images = _model_and_inputs(args)
    batches = [images[s : s + args.batch] for s in range(0, args.n, args.batch)]
    t_plain, t_bye, ratios = _timings(model, collate, batches, args.repeats)
    print(f"model: {'tiny config' if args.tiny else 'LLaVA + SmolLM2-135M'}  n={args.n} batch={args.batch} threads=1")
    print(
        f"plain eager forward: {statistics.median(t_plain):.2f} s  ({args.n / statistics.median(t_plain):.1f} samples/s)"
    )
    print(f"BYE scoring (hooks): {statistics.median(t_bye):.2f} s  ({args.n / statistics.median(t_bye):.1f} samples/s)")
    print(f"ratio BYE / plain: median {statistics.median(ratios):.3f}  (min {min(ratios):.3f}, max {max(ratios):.3f})")
    att_bytes, hook_bytes = _attention_bytes(model, collate(batches[0], None))
    print(
        f"attention kept per batch of {len(batches[0])}: output_attentions {att_bytes / 2**20:.2f} MiB, "
        f"hooks {hook_bytes / 2**20:.4f} MiB  (ratio {att_bytes / hook_bytes:.0f}x)"
    )


if __name__ == "__main__":
    main()
