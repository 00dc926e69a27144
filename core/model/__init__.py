"""Our SANA-Video transformer (token-major), 3D RoPE tables and the constant-memory streaming state."""

from core.model.rope import build_rope_tables, rope_axis_dims
from core.model.state import BlockContribution, StreamState
from core.model.transformer import SanaVideoTransformer, TextContext

__all__ = ["SanaVideoTransformer", "TextContext", "StreamState", "BlockContribution", "build_rope_tables",
           "rope_axis_dims"]
