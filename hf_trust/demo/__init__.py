"""The demo runner: each method contributes one *recipe* that runs it on the real offline assets.

A recipe is a module in :mod:`hf_trust.demo.recipes` that registers a function with
:func:`register_recipe`.  The runner discovers the modules itself, so adding a method never needs an
edit here::

    from hf_trust.demo import RecipeContext, RecipeResult, register_recipe

    @register_recipe("thanora", title="ThanoRA vs LoRA on a reasoning-gym mixture", minutes=2.0)
    def run(ctx: RecipeContext) -> RecipeResult:
        result = RecipeResult()
        for seed in ctx.progress(ctx.seeds, desc="seeds"):
            ...
        result.add("mixture (3 tasks)", "mean score", value, std=spread, n=len(ctx.seeds))
        result.add_plot(ctx.savefig(fig, "thanora_allocation.png"))  # embedded in the report
        result.add_claim("ThanoRA beats LoRA on the mixture", f"{value:.3f} vs {lora:.3f}", "reproduced")
        model.save_pretrained(ctx.out_dir / "adapter")  # optional: `hf-trust demo --push-to URL` publishes it
        result.add_adapter(ctx.out_dir / "adapter", metrics={"mean score": value})
        return result

Every number a recipe adds must have been computed in that run: the table prints exactly what the
recipes return. The report (``demo_report/README.md``) embeds every picture a recipe records with
``add_plot`` and ends with a claims table built from ``add_claim``; a recipe without a picture or a
claim is flagged there with a warning.
"""

from .registry import (
    VERDICTS,
    AdapterRecord,
    Claim,
    Recipe,
    RecipeContext,
    RecipeResult,
    ResultRow,
    available_recipes,
    get_recipe,
    register_recipe,
)
from .runner import run_demo

__all__ = [
    "VERDICTS",
    "AdapterRecord",
    "Claim",
    "Recipe",
    "RecipeContext",
    "RecipeResult",
    "ResultRow",
    "available_recipes",
    "get_recipe",
    "register_recipe",
    "run_demo",
]
