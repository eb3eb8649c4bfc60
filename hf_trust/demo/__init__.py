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
        result.add_plot(ctx.savefig(fig, "thanora_allocation.png"))
        return result

Every number a recipe adds must have been computed in that run: the table prints exactly what the
recipes return.
"""

from .registry import (
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
    "Recipe",
    "RecipeContext",
    "RecipeResult",
    "ResultRow",
    "available_recipes",
    "get_recipe",
    "register_recipe",
    "run_demo",
]
