"""The toy LLaVA backdoor used by the BYE tests; it lives in the demo layer so benchmarks can share it."""

from hf_trust.demo.studies.bye import (  # noqa: F401 - re-exported for the tests
    ASSISTANT,
    BOS,
    CLASS_TOKENS,
    IMAGE_TOKEN,
    IMG,
    N_V,
    PAD,
    PATCH,
    TARGET,
    Q,
    apply_trigger,
    asr_and_cp,
    collate,
    make_dataset,
    make_images,
    make_tiny_llava,
    pixel_values,
    predict,
    prompt_ids,
    train,
)
