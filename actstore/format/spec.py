"""Constants of the v2 format (normative text: ``specs/format-v2.md``)."""

from __future__ import annotations

import re

#: ``lmprobe:format_version`` written and accepted (major must be 2).
LMPROBE_FORMAT_VERSION = "2.0"
#: Version of actstore's extension keys (``actstore:format``); its major follows the lmprobe major.
ACTSTORE_FORMAT_VERSION = "2.1"
#: Extensions this reader understands; a dataset listing others under ``must_understand`` is refused.
KNOWN_EXTENSIONS = frozenset({"views", "files", "extraction", "labels", "codecs"})
#: The ``must_understand`` name of compact storage codecs (spec section 2b).
CODEC_EXTENSION = "codecs"

INDEX_DIR = "index"
INDEX_FILE = "index/{split}-{part:05d}-of-{parts:05d}.parquet"
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
#: safetensors dtype code -> (name, itemsize) for every code the reader accepts.
ST_DTYPES = {
    "F32": ("float32", 4),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "F64": ("float64", 8),
    "I32": ("int32", 4),
    "I64": ("int64", 8),
    "I16": ("int16", 2),
    "U8": ("uint8", 1),
    "I8": ("int8", 1),
    "F8_E4M3": ("fp8_e4m3", 1),
}
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
#: Largest row count, dimension, shard count and |layer| accepted from metadata.
MAX_ROWS = 1 << 48
MAX_DIM = 1 << 24
MAX_LAYER = 1 << 20
