"""BYE scoring cost vs one plain eager forward over the same batches, and attention memory hooks vs
``output_attentions``.  Model: the LLaVA with the real SmolLM2 decoder (``--tiny``: a 4-layer config model).

    python benchmarks/bye_bench.py [--n 64] [--batch 16] [--repeats 3] [--tiny]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

torch.set_num_threads(1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    from hf_trust.filters import BYEFilter
    from hf_trust.filters.capture import capture_rows

    rng = np.random.default_rng(0)
    if args.tiny:
        from hf_trust.demo.studies import bye as toy

        model = toy.make_tiny_llava(0)
        collate = toy.collate
        images = [im for im in rng.integers(0, 255, (args.n, toy.IMG, toy.IMG)).astype(np.uint8)]
    else:
        from hf_trust.assets import llava_num_image_tokens, load_llava_smollm2
        from hf_trust.demo.studies.bye import Codec

        model, tok, img_id = load_llava_smollm2()
        codec = Codec(tok, img_id, llava_num_image_tokens(model))
        collate = codec.prompt_batch
        images = [im for im in rng.integers(0, 255, (args.n, 32, 32)).astype(np.uint8)]
    bye = BYEFilter(model, collate_fn=collate, batch_size=args.batch)
    batches = [images[s : s + args.batch] for s in range(0, args.n, args.batch)]

    def plain():
        with torch.no_grad():
            for b in batches:
                model(**collate(b, None), use_cache=False)

    def scored():
        for b in batches:
            bye.entropy_batch(b, [""] * len(b))

    plain(), scored()  # warm-up
    ratios, t_plain, t_bye = [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        plain()
        t1 = time.perf_counter()
        scored()
        t2 = time.perf_counter()
        t_plain.append(t1 - t0)
        t_bye.append(t2 - t1)
        ratios.append((t2 - t1) / (t1 - t0))
    print(f"model: {'tiny config' if args.tiny else 'LLaVA + SmolLM2-135M'}  n={args.n} batch={args.batch} threads=1")
    print(
        f"plain eager forward: {statistics.median(t_plain):.2f} s  ({args.n / statistics.median(t_plain):.1f} samples/s)"
    )
    print(f"BYE scoring (hooks): {statistics.median(t_bye):.2f} s  ({args.n / statistics.median(t_bye):.1f} samples/s)")
    print(f"ratio BYE / plain: median {statistics.median(ratios):.3f}  (min {min(ratios):.3f}, max {max(ratios):.3f})")

    inputs = collate(batches[0], None)
    with torch.no_grad():
        out = model(**inputs, output_attentions=True, use_cache=False)
        att_bytes = sum(a.numel() * a.element_size() for a in out.attentions)
        del out
        with capture_rows(model, inputs["attention_mask"]) as cap:
            model(**inputs, use_cache=False)
        hook_bytes = sum(r.numel() * r.element_size() for r in cap.rows)
    print(
        f"attention kept per batch of {len(batches[0])}: output_attentions {att_bytes / 2**20:.2f} MiB, "
        f"hooks {hook_bytes / 2**20:.4f} MiB  (ratio {att_bytes / hook_bytes:.0f}x)"
    )


if __name__ == "__main__":
    main()
