"""The inference engine: paged KV cache, continuous-batching scheduler, runner, sampling, Engine."""

from joulepath.engine.context import ContextLengthError
from joulepath.engine.engine import Completion, Engine, EngineConfig, RequestRecord, StepOutput
from joulepath.engine.kv_cache import KVCacheFull, PagedKVCache
from joulepath.engine.sampling import SamplingParams, sample_token

__all__ = [
    "Completion",
    "ContextLengthError",
    "Engine",
    "EngineConfig",
    "KVCacheFull",
    "PagedKVCache",
    "RequestRecord",
    "SamplingParams",
    "StepOutput",
    "sample_token",
]
