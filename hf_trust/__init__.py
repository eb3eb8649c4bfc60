"""hf-trust: research methods for adapting, distilling, federating and securing foundation models,
reached through the Hugging Face APIs users already know.

``import hf_trust`` imports neither PEFT nor torch.  It registers the PEFT tuner types (ThanoRA, LoRASculpt) the
moment they can be needed: right after ``peft`` finishes importing (a post-import hook on ``sys.meta_path``), or
at once when ``peft`` was imported first.  Either way ``get_peft_model``, ``PeftConfig.from_pretrained`` and
``PeftModel.from_pretrained`` know them.  Every public class below is importable from here and from its own
subpackage; they are loaded on first attribute access (PEP 562), and asking for a tuner class imports PEFT (and
so registers the tuners).  A process that never uses PEFT (a Flower ClientApp, ``hf-trust --help``) never pays
for it.
"""

from __future__ import annotations

import importlib
import os
import sys

__version__ = "0.1.0"

# Public name -> the subpackage that exports it. tests/test_layout.py checks that every entry resolves
# to the same object as the subpackage export.
_LAZY: dict[str, str] = {
    # PEFT tuners
    "ThanoRAConfig": "hf_trust.peft_tuners.thanora",
    "ThanoRAModel": "hf_trust.peft_tuners.thanora",
    "ThanoRATrainer": "hf_trust.peft_tuners.thanora",
    "preprocess_thanora": "hf_trust.peft_tuners.thanora",
    "LoRASculptConfig": "hf_trust.peft_tuners.lorasculpt",
    "LoRASculptModel": "hf_trust.peft_tuners.lorasculpt",
    "LoRASculptTrainer": "hf_trust.peft_tuners.lorasculpt",
    "LoRASculptCallback": "hf_trust.peft_tuners.lorasculpt",
    # federated core
    "FederatedConfig": "hf_trust.trainers.federated",
    "FederatedTrainer": "hf_trust.trainers.federated",
    "ClientTrainer": "hf_trust.trainers.federated",
    "SupervisedClientTrainer": "hf_trust.trainers.federated",
    "DirichletLabelPartitioner": "hf_trust.trainers.federated",
    "IIDPartitioner": "hf_trust.trainers.federated",
    "DomainPartitioner": "hf_trust.trainers.federated",
    "FixedClassesPartitioner": "hf_trust.trainers.federated",
    "Strategy": "hf_trust.trainers.federated",
    "FedAvg": "hf_trust.trainers.federated",
    "FedProx": "hf_trust.trainers.federated",
    "FedAdam": "hf_trust.trainers.federated",
    "latest_checkpoint": "hf_trust.trainers.federated",
    # federations on Flower (needs the [flower] extra; a clear MissingExtraError without it)
    "FlowerFederation": "hf_trust.trainers.federated.flower",
    # federated prompt learning
    "PromptConfig": "hf_trust.trainers.fpl",
    "FPLConfig": "hf_trust.trainers.fpl",
    "CLIPPromptModel": "hf_trust.trainers.fpl",
    "FederatedPromptTrainer": "hf_trust.trainers.fpl",
    "load_prompts": "hf_trust.trainers.fpl",
    # GGEUR
    "GGEURConfig": "hf_trust.trainers.ggeur",
    "GGEURTrainer": "hf_trust.trainers.ggeur",
    "embed_dataset": "hf_trust.trainers.ggeur",
    # ACGKD
    "ACGKDConfig": "hf_trust.trainers.acgkd",
    "ACGKDTrainer": "hf_trust.trainers.acgkd",
    "acgkd_distill": "hf_trust.trainers.acgkd",
    "GNNClassifier": "hf_trust.trainers.acgkd",
    # BYE
    "BYEFilter": "hf_trust.filters",
    "BYESelectConfig": "hf_trust.filters",
    "BYEReport": "hf_trust.filters",
    "bye_select": "hf_trust.filters",
    "bye_defence": "hf_trust.filters",
    # EPEAgent
    "AgentSpec": "hf_trust.agents",
    "PrivacyPolicy": "hf_trust.agents",
    "PrivacyEnhancingAgent": "hf_trust.agents",
    "EPEOrchestrator": "hf_trust.agents",
    "hf_chat_backend": "hf_trust.agents",
    "LeakageDetector": "hf_trust.agents",
    "PrivacyAgentConfig": "hf_trust.agents",
    "train_privacy_agent": "hf_trust.agents",
    # Hub
    "push_adapter": "hf_trust.hub_cards",
    "render_card": "hf_trust.hub_cards",
    "TrustReport": "hf_trust.hub_cards",
    "TrustCheck": "hf_trust.hub_cards",
    # the one exception family
    "HFTrustError": "hf_trust.errors",
    "HFTrustConfigError": "hf_trust.errors",
    "HFTrustDataError": "hf_trust.errors",
    "HFTrustCacheError": "hf_trust.errors",
    "MissingExtraError": "hf_trust.errors",
}


def metric_path(name: str) -> str:
    """Absolute path of one of this package's ``evaluate`` metric folders, usable from any cwd.

    >>> import evaluate, hf_trust
    >>> ck = evaluate.load(hf_trust.metric_path("cot_kinetics"))  # doctest: +SKIP
    """
    from hf_trust import metrics

    root = os.path.dirname(os.path.abspath(metrics.__file__))
    path = os.path.join(root, name)
    if not os.path.isfile(os.path.join(path, f"{name}.py")):
        available = sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, f"{d}.py")))
        from hf_trust.errors import HFTrustConfigError

        raise HFTrustConfigError(f"metric_path: unknown metric {name!r}; available: {', '.join(available) or 'none'}.")
    return path


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hf_trust' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))


# ------------------------------------------------------------------ PEFT registration, after `import peft`
#: The attribute that marks our finder on ``sys.meta_path`` (survives ``importlib.reload(hf_trust)``).
_HOOK_MARK = "_hf_trust_registers_peft_tuners"


def _register_tuners() -> list[str]:
    """Register every tuner type with PEFT (imports ``hf_trust.peft_tuners``, hence PEFT); idempotent.

    Goes to ``_registry`` directly: when the hook fires inside ``hf_trust.peft_tuners``' own first line
    (``import peft``), that package is still half-imported, while its submodules can be imported.
    """
    return importlib.import_module("hf_trust.peft_tuners._registry").register_all()


def _peft_hook_installed() -> bool:
    return any(getattr(finder, _HOOK_MARK, False) for finder in sys.meta_path)


def _remove_peft_hook() -> None:
    sys.meta_path[:] = [finder for finder in sys.meta_path if not getattr(finder, _HOOK_MARK, False)]


class _RegisterAfterPeft:
    """Loader of the top-level ``peft`` package: the real loader's ``exec_module``, then the registration.

    The module gets the real loader back before it runs, so ``peft.__loader__`` / ``peft.__spec__.loader`` are
    what they would be without the hook.  The registration runs once ``peft/__init__.py`` has finished (every
    name PEFT exports exists) and before ``import peft`` returns; the finder then leaves ``sys.meta_path``.
    """

    def __init__(self, loader: object) -> None:
        self._loader = loader

    def __getattr__(self, name: str) -> object:  # anything else a loader offers: the real loader's
        return getattr(self._loader, name)

    def create_module(self, spec: object) -> object:
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: object) -> None:
        module.__loader__ = self._loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)  # an error here leaves the hook in place for the next attempt
        _remove_peft_hook()
        try:
            _register_tuners()
        except Exception as exc:  # never break `import peft` for code that does not use our tuners
            import warnings

            warnings.warn(
                f"hf-trust could not register its PEFT tuner types after `import peft` ({type(exc).__name__}: {exc}); "
                "ThanoRA / LoRASculpt adapters will not load. `from hf_trust import ThanoRAConfig` shows the full "
                "error.",
                RuntimeWarning,
                stacklevel=2,
            )


class _PeftImportHook:
    """``sys.meta_path`` finder that only answers for ``peft``: it asks the finders behind it for the real spec
    and wraps its loader in :class:`_RegisterAfterPeft`.  Finding the spec (``importlib.util.find_spec("peft")``,
    as transformers does to see whether PEFT is installed) imports nothing and changes nothing."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> object:
        if fullname != "peft":
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if getattr(finder, _HOOK_MARK, False) or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        else:
            return None  # PEFT is not installed: the import fails as it would without us
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _RegisterAfterPeft(spec.loader)
        return spec


setattr(_PeftImportHook, _HOOK_MARK, True)


def _install_peft_hook() -> None:
    """Register now if ``peft`` is already imported, else add the finder (once, however often this runs)."""
    peft = sys.modules.get("peft")
    if peft is not None and not getattr(getattr(peft, "__spec__", None), "_initializing", False):
        _register_tuners()
    elif peft is None and not _peft_hook_installed():
        sys.meta_path.insert(0, _PeftImportHook())


_install_peft_hook()

__all__ = ["__version__", "metric_path", *_LAZY]
