"""Loading a transformers model and tokenizer by name, and finding its blocks.

The runner itself takes loaded objects; this module is the convenience the CLI and
``actstore.extract("name", ...)`` use.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import sys
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ..errors import InvalidArgumentError, require

__all__ = ["LoadedModel", "as_loaded", "find_blocks", "is_causal", "load_model", "name_notice", "prepare_tokenizer",
           "public_name"]


@dataclass
class LoadedModel:
    """A model ready for extraction, with what the metadata records about it."""

    model: Any
    tokenizer: Any
    name: str
    revision: str | None
    device: Any
    causal: bool
    public: str | None = None  # the name recorded in metadata (never a local path)

    @cached_property
    def blocks(self) -> list[Any]:
        """The transformer blocks (:func:`find_blocks`), found once per model, not per batch."""
        return find_blocks(self.model)

    @cached_property
    def forward_args(self) -> frozenset[str]:
        """The argument names ``model.forward`` takes, read once (``inspect.signature`` is
        slow enough to show per batch)."""
        return frozenset(inspect.signature(self.model.forward).parameters)

    def accepts(self, argument: str) -> bool:
        """Whether ``model.forward`` takes ``argument`` (decorated forwards included)."""
        return argument in self.forward_args

    @property
    def published_name(self) -> str:
        """What metadata and cards record: ``public``, else :func:`public_name` of ``name``."""
        return self.public or public_name(self.name)


def _looks_local(name: str) -> bool:
    return os.path.isabs(name) or name.startswith((".", "~")) or "\\" in name or os.path.exists(name)


def public_name(name_or_path: str, model_name: str | None = None) -> str:
    """The model name recorded in metadata and cards: never an absolute local path.

    ``model_name`` wins when given. A Hub id stays as it is. For a local folder, the
    ``_name_or_path`` its ``config.json`` records (e.g. the Hub id it was saved from), else
    the folder's name.

    Examples
    --------
    >>> public_name("gpt2")
    'gpt2'
    >>> public_name("/no/such/dir/my-model", "org/my-model")
    'org/my-model'
    """
    if model_name is not None:
        if not isinstance(model_name, str) or not model_name.strip() or _looks_local(model_name):
            raise InvalidArgumentError(
                f"model_name must be a model's public name, such as 'org/name'; got "
                f"{model_name!r}, which looks like a local path (it would be published)."
            )
        return model_name
    return _public_and_source(os.fspath(name_or_path))[0]


def _public_and_source(name: str) -> tuple[str, str]:
    """(recorded name, where it came from: ``"hub"``, ``"config"`` or ``"folder"``)."""
    if not _looks_local(name):
        return name, "hub"
    folder = os.path.abspath(os.path.expanduser(name))
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            recorded = json.load(f).get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if isinstance(recorded, str) and recorded.strip() and not _looks_local(recorded.strip()) \
            and not (len(recorded) > 1 and recorded[1] == ":"):  # nor a Windows drive path
        return recorded.strip(), "config"
    return os.path.basename(folder.rstrip(os.sep)) or "local-model", "folder"


def name_notice(name_or_path: str, model_name: str | None = None) -> str | None:
    """The notice to print when a local folder's name comes from its ``config.json``.

    ``_name_or_path`` is what transformers recorded when the folder was saved; for a
    fine-tune saved by an older transformers it names the *base* model, so the name that
    would be published may be wrong. None when ``model_name`` is given or the name is a Hub
    id or the folder's own name.

    Examples
    --------
    >>> name_notice("gpt2") is None
    True
    """
    if model_name is not None:
        return None
    public, source = _public_and_source(os.fspath(name_or_path))
    if source != "config":
        return None
    return (f"recording model name {public!r} (from config.json _name_or_path); pass "
            "--model-name / model_name= to set it")


def is_causal(model: Any) -> bool:
    """True for decoder-only language models (GPT-2, Llama, Mistral, OLMo, ...)."""
    cfg = model.config
    if getattr(cfg, "is_encoder_decoder", False):
        return False
    archs = " ".join(getattr(cfg, "architectures", None) or [])
    return bool(getattr(cfg, "is_decoder", False)) or "CausalLM" in archs or "LMHead" in archs or \
        type(model).__name__.endswith(("ForCausalLM", "LMHeadModel"))


def find_blocks(model: Any) -> list[Any]:
    """The model's transformer blocks: the shallowest ModuleList with one entry per layer."""
    import torch

    n = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", None)
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n and n:
            return list(module)
    raise InvalidArgumentError(
        f"Cannot find the {n} transformer blocks of {type(model).__name__}; actstore looks for a "
        "ModuleList with one module per hidden layer."
    )


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Give a tokenizer without a pad token one (its EOS, else UNK), as lmprobe does."""
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise InvalidArgumentError(
                "The tokenizer has no pad, EOS or UNK token to pad batches with; set "
                "tokenizer.pad_token before extracting."
            )
        tokenizer.pad_token = fallback
    return tokenizer


def _auto_device(torch: Any) -> str:
    """This process's GPU (``LOCAL_RANK`` under torchrun/accelerate), else the CPU."""
    import os

    if not torch.cuda.is_available():
        return "cpu"
    # one model per GPU: every torchrun rank would otherwise load onto cuda:0
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"


def load_model(
    name_or_path: str,
    *,
    revision: str | None = None,
    device: str = "auto",
    dtype: Any = "auto",
    trust_remote_code: bool = False,
    with_lm_head: bool = False,
    model_name: str | None = None,
    progress: bool = True,
) -> LoadedModel:
    """Load model + tokenizer; ``with_lm_head`` loads the causal-LM head (logits, generation).

    ``model_name`` is the name recorded in metadata (default: :func:`public_name`);
    ``progress=False`` silences transformers' "Loading weights" bar.
    """
    require("torch", "extract")
    transformers = require("transformers", "extract")
    import torch

    kw = {"revision": revision, "trust_remote_code": trust_remote_code}
    config = transformers.AutoConfig.from_pretrained(name_or_path, **kw)
    archs = " ".join(getattr(config, "architectures", None) or [])
    causal = ("CausalLM" in archs or "LMHead" in archs) and not config.is_encoder_decoder
    cls = transformers.AutoModelForCausalLM if (with_lm_head or causal) else transformers.AutoModel
    bars = transformers.utils.logging
    was_on = bars.is_progress_bar_enabled()
    if not progress:
        bars.disable_progress_bar()
    try:
        model = cls.from_pretrained(name_or_path, dtype=dtype, **kw)
    finally:
        if was_on and not progress:
            bars.enable_progress_bar()
    tokenizer = prepare_tokenizer(transformers.AutoTokenizer.from_pretrained(name_or_path, **kw))
    if device == "auto":
        device = _auto_device(torch)
    model.to(device).eval()
    sha = getattr(config, "_commit_hash", None) or revision
    lm = LoadedModel(model, tokenizer, name_or_path, sha, torch.device(device), is_causal(model))
    lm.public = public_name(name_or_path, model_name)
    notice = name_notice(name_or_path, model_name)
    if notice is not None:  # the name will be published: say where it came from
        print(notice, file=sys.stderr)
    return lm


def as_loaded(model: Any, tokenizer: Any = None, *, revision: str | None = None,
              device: str = "auto", dtype: Any = "auto", trust_remote_code: bool = False,
              with_lm_head: bool = False, model_name: str | None = None,
              progress: bool = True) -> LoadedModel:
    """A :class:`LoadedModel` from a name/path (loaded with :func:`load_model`), a
    ``LoadedModel`` (kept), or a transformers model (with its ``tokenizer``, else the one
    saved with it)."""
    if isinstance(model, LoadedModel):
        if model_name is not None:
            model = dataclasses.replace(model, public=public_name(model.name, model_name))
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_model(os.fspath(model), revision=revision, device=device, dtype=dtype,
                          trust_remote_code=trust_remote_code, with_lm_head=with_lm_head,
                          model_name=model_name, progress=progress)
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model.config.name_or_path)
    model.eval()
    name = getattr(model.config, "name_or_path", None) or type(model).__name__
    sha = revision or getattr(model.config, "_commit_hash", None)
    return LoadedModel(model, prepare_tokenizer(tokenizer), name, sha,
                       next(model.parameters()).device, is_causal(model),
                       public_name(name, model_name))
