"""Constants of the v2 format (normative text: ``specs/format-v2.md``)."""

from __future__ import annotations

import re
from typing import NamedTuple

#: ``lmprobe:format_version`` written and accepted (major must be 2).
LMPROBE_FORMAT_VERSION = "2.0"
#: Version of actstore's extension keys (``actstore:format``); its major follows the lmprobe major.
ACTSTORE_FORMAT_VERSION = "2.1"
#: Extensions this reader understands; a dataset listing others under ``must_understand`` is refused.
KNOWN_EXTENSIONS = frozenset({"views", "files", "extraction", "labels", "codecs", "compact_tokens",
                              "token_masks"})
#: The ``must_understand`` name of compact storage codecs (spec section 2b).
CODEC_EXTENSION = "codecs"
#: The ``must_understand`` name of the compact token layout (spec section 5b).
COMPACT_TOKENS_EXTENSION = "compact_tokens"
#: The ``extensions`` name of the per-row token masks (spec section 5c); never ``must_understand``.
TOKEN_MASKS_EXTENSION = "token_masks"
#: Token mask columns (spec section 5c): the row's prompt length, and whether its token 0 is a
#: special token the tokenizer added (BOS, CLS).
TOKEN_MASK_COLUMNS = ("prompt_tokens", "special_first_token")
#: Per-token list columns of a full-sequence index (lmprobe's layout).
TOKEN_LIST_COLUMNS = ("token_shard_ids", "token_shard_offsets")
#: Compact token columns (spec section 5b): a row's rest shard and the row of its token 0 there.
TOKEN_COMPACT_COLUMNS = ("token_shard", "token_start")
#: The writer's default (``lmprobe_compat=None``) writes the per-token lists up to this many tokens.
COMPAT_MAX_TOKENS = 1 << 20

INDEX_DIR = "index"
INDEX_FILE = "index/{split}-{part:05d}-of-{parts:05d}.parquet"
#: The one index file a dataset has (split ``train``, one part): its commit point.
INDEX_PATH = INDEX_FILE.format(split="train", part=0, parts=1)
HIDDEN_PATTERN = "tensors/hidden_layer{layer:03d}_shard{shard:03d}.safetensors"
VIEW_PATTERN = "tensors/{view}/hidden_layer{layer:03d}_shard{shard:03d}.safetensors"
HIDDEN_KEY = "hidden.layer_{layer}"
LOGITS_PATTERN = "tensors/logits_topk_{shard:03d}.safetensors"
LOGITS_VALUES_KEY = "logits_topk.values"
LOGITS_INDICES_KEY = "logits_topk.indices"

META_PREFIX = "lmprobe:"
EXT_PREFIX = "actstore:"

STORAGE_POOLED = "pooled"
STORAGE_FULL = "full_sequence"

#: Pooling names with a defined meaning; other view names are allowed (``[a-z0-9_]+``).
POOLINGS = ("last_token", "first_token", "mean", "all")
VIEW_NAME = re.compile(r"^[a-z0-9_]{1,64}$")

#: Index columns the format itself writes; a user's metadata column may not take these names.
RESERVED_COLUMNS = frozenset({
    "text", "label", "num_tokens", "shard_index", "row_offset", "shard_index_logits",
    "row_offset_logits", "token_offset", "token_shard_ids", "token_shard_offsets",
    "token_shard", "token_start", "prompt_tokens", "special_first_token",
})

#: Float dtypes a hidden-state shard may hold: name -> (safetensors code, itemsize).
FLOAT_DTYPES = {"float32": ("F32", 4), "float16": ("F16", 2), "bfloat16": ("BF16", 2)}

#: Compact storage codecs (spec section 2b): name -> (safetensors code of the codes, itemsize).
CODEC_DTYPES = {"int8": ("I8", 1), "fp8_e4m3": ("F8_E4M3", 1)}
#: Every dtype a hidden-state view may record: the floats and the codecs.
STORED_DTYPES = {**FLOAT_DTYPES, **CODEC_DTYPES}
#: Keys of a codec shard's codes and scales (never ``hidden.layer_{layer}``: older readers
#: that find no such key refuse the file instead of reading codes as activations).
CODES_KEY = "hidden.layer_{layer}.codes"
SCALE_KEY = "hidden.layer_{layer}.scale"
#: Key of a ``per_channel_affine`` codec shard's per-channel offsets (spec section 2b).
OFFSET_KEY = "hidden.layer_{layer}.offset"


class StDtype(NamedTuple):
    """One row of :data:`ST_DTYPES`."""

    #: dtype name (``"bfloat16"``, ``"float32"``, ...).
    name: str
    #: bytes per value.
    itemsize: int
    #: numpy dtype string whose values are the stored bytes: always little-endian, as
    #: safetensors stores them whatever the host (bfloat16 as its ``<u2`` bit patterns).
    storage: str


#: The one storage dtype table: safetensors code -> (name, itemsize, numpy storage dtype), for
#: every code the reader accepts. Readers, writers and the cache all look dtypes up here.
ST_DTYPES: dict[str, StDtype] = {
    "F32": StDtype("float32", 4, "<f4"),
    "F16": StDtype("float16", 2, "<f2"),
    "BF16": StDtype("bfloat16", 2, "<u2"),
    "F64": StDtype("float64", 8, "<f8"),
    "I32": StDtype("int32", 4, "<i4"),
    "I64": StDtype("int64", 8, "<i8"),
    "I16": StDtype("int16", 2, "<i2"),
    "U8": StDtype("uint8", 1, "|u1"),
    # the compact codecs' codes (spec section 2b); e4m3 codes are kept as their bit patterns
    "I8": StDtype("int8", 1, "|i1"),
    "F8_E4M3": StDtype("fp8_e4m3", 1, "|i1"),
}
#: dtype name -> safetensors code (the inverse of :data:`ST_DTYPES`).
ST_CODES = {d.name: code for code, d in ST_DTYPES.items()}
#: Largest safetensors header accepted (the reference implementation's own limit).
MAX_HEADER_BYTES = 100_000_000

#: Largest JSON value accepted in the index's schema metadata (all keys together).
MAX_METADATA_BYTES = 64 << 20
#: Deepest nesting of ``[``/``{`` accepted in any JSON read from a dataset.
MAX_JSON_DEPTH = 64
#: Largest index file read (the whole index is held in memory while it is decoded).
MAX_INDEX_BYTES = 2 << 30
#: An index may declare at most this many rows per byte of its file (plus ``INDEX_ROWS_SLACK``);
#: a real index spends at least a few bits per row, a decompression bomb 100 rows per byte.
MAX_INDEX_ROWS_PER_BYTE = 16
INDEX_ROWS_SLACK = 4096
#: Decoded column data may be at most this many times the index file's size (plus 64 MiB).
MAX_INDEX_EXPANSION = 64
#: Index columns that locate rows (decoded at open; spec section 3).
LOCATION_COLUMNS = ("shard_index", "row_offset", "shard_index_logits", "row_offset_logits")
#: Index columns that locate a compact full-sequence row's tokens (fetched at open with the
#: location columns, decoded on first token use).
TOKEN_LOCATION_COLUMNS = ("num_tokens", "token_shard", "token_start")
#: Rows per row group of a written index (spec section 3, "Row groups"): a remote reader can
#: fetch one group's texts without the rest, and the footer stays a few KB per 10^6 rows.
INDEX_ROW_GROUP_ROWS = 1 << 16
#: Integer index columns written with Parquet's ``DELTA_BINARY_PACKED`` encoding: offsets
#: that grow by a constant take a few bits per 128 rows instead of 4 or 8 bytes per row.
DELTA_COLUMNS = ("shard_index", "row_offset", "shard_index_logits", "row_offset_logits",
                 "token_offset", "token_shard", "token_start")

#: Largest row count, dimension, shard count and |layer| accepted from metadata.
MAX_ROWS = 1 << 48
MAX_DIM = 1 << 24
MAX_LAYER = 1 << 20
