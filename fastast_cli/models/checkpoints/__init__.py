"""Checkpoints: fastast's own format, the foreign AST formats, and loading models from them.

- `files`: the only module that opens a file: weights-only `torch.load` or safetensors on the
  way in, a storable-values check and an atomic rename on the way out.
- `fastast`: the fastast format (`save_checkpoint`, `read_checkpoint`).
- `original`, `huggingface`, `deit`, `passt`: one module per foreign format, each returning the
  same `PretrainedWeights` record (`weights`), named as the model it initialises names its
  tensors (`AST.state_dict()`, `PaSSTClassifier.state_dict()`).
- `fitting`: a weights record into a model, AST or PaSST (position-embedding adaptation, head,
  the fit check), and `load_exactly` for weights that must fit as they are.
- `loading`: `load_checkpoint`, the one entry point for a trained classifier (reads a file once,
  builds the architecture recorded in it), and `load_model` / `init_from_pretrained` for ASTs.

Every user mistake (missing file, unreadable or unsafe file, weights that do not fit) raises
`CheckpointError` with one message.
"""

from fastast_cli.models.checkpoints.fastast import (
    FORMAT_NAME,
    FORMAT_VERSION,
    read_checkpoint,
    save_checkpoint,
)
from fastast_cli.models.checkpoints.files import read_state_dict
from fastast_cli.models.checkpoints.huggingface import (
    HF_MODEL_TYPE,
    rename_hf_state_dict,
    to_hf_state_dict,
)
from fastast_cli.models.checkpoints.loading import (
    init_from_pretrained,
    load_checkpoint,
    load_model,
    read_weights,
)
from fastast_cli.models.checkpoints.weights import PretrainedWeights

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "HF_MODEL_TYPE",
    "PretrainedWeights",
    "init_from_pretrained",
    "load_checkpoint",
    "load_model",
    "read_checkpoint",
    "read_state_dict",
    "read_weights",
    "rename_hf_state_dict",
    "save_checkpoint",
    "to_hf_state_dict",
]
