"""Cost of one federated prompt-learning step vs one forward-backward of the frozen CLIP on the same batch.

    python benchmarks/fpl_bench.py [--repeats 20]

Baseline: forward + backward through the same CLIP with every weight trainable, text side over the C class
prompts (full fine-tuning step, no optimiser).  Measured in the same process, threads = 1; also the
evaluation speed-up from caching the class text features (LPT) instead of recomputing them per batch.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import CLIPConfig, CLIPModel

from hf_trust.trainers.fpl import CLIPPromptModel, PromptConfig


class _Tok:
    bos_token_id, eos_token_id, pad_token_id = 1, 2, 2

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [3 + (hash(w) % 90) for w in text.replace(".", " .").split()]}


def _clip() -> CLIPModel:
    torch.manual_seed(0)
    return CLIPModel(
        CLIPConfig(
            text_config=dict(
                vocab_size=100,
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=4,
                num_attention_heads=4,
                max_position_embeddings=32,
                bos_token_id=1,
                eos_token_id=2,
            ),
            vision_config=dict(
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=4,
                num_attention_heads=4,
                image_size=32,
                patch_size=4,
            ),
            projection_dim=32,
        )
    ).eval()


def _time(fn, repeats: int) -> tuple[float, float]:
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), statistics.pstdev(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--classes", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    names = [f"class{i}" for i in range(args.classes)]
    x = torch.randn(args.batch, 3, 32, 32)
    y = torch.randint(args.classes, (args.batch,))

    base = _clip()
    ref = CLIPPromptModel(base, names, PromptConfig(kind="vpt", n_ctx_vision=1), tokenizer=_Tok())
    ref.remove_prompts()
    for p in base.parameters():
        p.requires_grad_(True)

    def baseline():
        base.zero_grad(set_to_none=True)
        logits = ref(x, text_features=ref.text_features())
        torch.nn.functional.cross_entropy(logits, y).backward()

    t0, s0 = _time(baseline, args.repeats)
    print(
        f"baseline fwd+bwd of the CLIP, all weights with grad, no prompts (batch {args.batch}, {args.classes} classes): {t0 * 1e3:.1f} ms ± {s0 * 1e3:.1f}"
    )
    for kind in ("lpt", "vpt", "both"):
        model = CLIPPromptModel(
            _clip(), names, PromptConfig(kind=kind, n_ctx_text=16, n_ctx_vision=16), tokenizer=_Tok()
        )
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)

        def step(model=model, opt=opt):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

        t, s = _time(step, args.repeats)
        print(f"{kind:5s} prompt step: {t * 1e3:.1f} ms ± {s * 1e3:.1f}  ratio vs baseline {t / t0:.2f}")
        if kind in ("lpt", "both"):
            with torch.no_grad():

                def uncached(model=model):
                    for _ in range(4):
                        model(x)

                def cached(model=model):
                    model.clear_cache()
                    txt = model.cached_text_features()
                    for _ in range(4):
                        model(x, text_features=txt)

                tu, _ = _time(uncached, args.repeats)
                tc, _ = _time(cached, args.repeats)
                print(
                    f"{kind:5s} eval of 4 batches: text recomputed {tu * 1e3:.1f} ms, cached {tc * 1e3:.1f} ms "
                    f"(speed-up {tu / tc:.2f}x)"
                )


if __name__ == "__main__":
    main()
