"""Gemma-2 text encoder with the official SANA-Video prompt handling, and a tiny random Gemma writer for the demo.

Official handling (NVlabs/Sana `inference_video_scripts/inference_sana_video.py`, same math as diffusers
`SanaVideoPipeline.encode_prompt`):

- positive prompt = CHI + prompt.strip() + motion suffix, where CHI is the "complex human instruction" (its lines
  joined with "\\n") and the motion suffix is f" motion score: {int(ms)}.";
- tokenized with padding="max_length", truncation=True, max_length = len(tokenize(CHI)) + 300 - 2 (the tokenize
  count includes BOS), right padding;
- embedding = Gemma2Model's last_hidden_state (after the final RMSNorm); keep position 0 (BOS) and the last 299
  positions, for the embeddings and the mask alike -> 300 tokens;
- negative prompt: no CHI, no motion suffix, max_length 300, no selection.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from core.errors import CheckpointError
from core.fsutil import atomic_write_bytes

MAX_TEXT_TOKENS = 300  # `text_encoder.model_max_length` in every released SANA-Video config

# CHI, image variant: verbatim from NVlabs/Sana configs/sana_video_config/Sana_2000M_480px_adamW_fsdp_longsana.yaml
# (the LongSANA inference config; the 480p and 720p yamls carry the same text).
IMAGE_CHI: tuple[str, ...] = (
    'Given a user prompt, generate an "Enhanced prompt" that provides detailed visual descriptions suitable for image generation. Evaluate the level of detail in the user prompt:',
    "- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, and spatial relationships to create vivid and concrete scenes.",
    "- If the prompt is already detailed, refine and enhance the existing details slightly without overcomplicating.",
    "Here are examples of how to transform or refine prompts:",
    "- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat curled up in a round shape, sleeping peacefully on a warm sunny windowsill, surrounded by pots of blooming red flowers.",
    "- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, featuring glowing street lamps, a diverse crowd of people in colorful clothing, and a double-decker bus passing by towering glass skyscrapers.",
    "Please generate only the enhanced description for the prompt below and avoid including any additional commentary or evaluations:",
    "User Prompt: ",
)

# CHI, video variant: verbatim default of diffusers `SanaVideoPipeline.__call__(complex_human_instruction=...)`.
VIDEO_CHI: tuple[str, ...] = (
    "Given a user prompt, generate an 'Enhanced prompt' that provides detailed visual descriptions suitable for video generation. Evaluate the level of detail in the user prompt:",
    "- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, motion, and temporal relationships to create vivid and dynamic scenes.",
    "- If the prompt is already detailed, refine and enhance the existing details slightly without overcomplicating.",
    "Here are examples of how to transform or refine prompts:",
    "- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat slowly settling into a curled position, peacefully falling asleep on a warm sunny windowsill, with gentle sunlight filtering through surrounding pots of blooming red flowers.",
    "- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, featuring glowing street lamps gradually lighting up, a diverse crowd of people in colorful clothing walking past, and a double-decker bus smoothly passing by towering glass skyscrapers.",
    "Please generate only the enhanced description for the prompt below and avoid including any additional commentary or evaluations:",
    "User Prompt: ",
)

CHI_VARIANTS: dict[str, tuple[str, ...]] = {"image": IMAGE_CHI, "video": VIDEO_CHI, "none": ()}
# The official LongSANA yaml (and the 480p / 720p yamls) use the IMAGE variant, so that is what the released
# checkpoints were run with in NVlabs/Sana; diffusers defaults to the video variant. Switchable via `chi=`.
DEFAULT_CHI_VARIANT = "image"

# `SanaInference.negative_prompt` in the official script; also the LongSANA training config's negative_prompt.
DEFAULT_NEGATIVE_PROMPT = (
    "A chaotic sequence with misshapen, deformed limbs in heavy motion blur, sudden disappearance, jump cuts, jerky "
    "movements, rapid shot changes, frames out of sync, inconsistent character shapes, temporal artifacts, jitter, "
    "and ghosting effects, creating a disorienting visual experience."
)

# Official script default (`SanaInference.motion_score = 10`, also the LongSANA yaml); README examples use 30.
DEFAULT_MOTION_SCORE = 10


class PromptTruncatedWarning(UserWarning):
    """A prompt was longer than the text encoder's window; its tail was cut off."""


def motion_suffix(motion_score: float | None, high_motion: bool = False) -> str:
    """The official motion text appended to every positive prompt (" low motion" / " high motion" when <= 0)."""
    if motion_score is None:
        return ""
    if motion_score > 0:
        return f" motion score: {int(motion_score)}."
    return " high motion" if high_motion else " low motion"


def resolve_chi(chi: str | tuple[str, ...] | list[str] | None) -> str:
    """A CHI variant name ("image", "video", "none"), the list of lines, or None -> the joined CHI text."""
    if chi is None:
        return ""
    if isinstance(chi, str):
        if chi not in CHI_VARIANTS:
            raise ValueError(f"unknown CHI variant {chi!r}; choose one of {sorted(CHI_VARIANTS)} or pass the lines")
        lines = CHI_VARIANTS[chi]
    else:
        lines = tuple(chi)
    return "\n".join(lines)


def select_prompt_tokens(values: torch.Tensor, keep: int = MAX_TEXT_TOKENS) -> torch.Tensor:
    """Keep position 0 (BOS) and the last `keep - 1` positions along dim 1: (B, L, ...) -> (B, keep, ...)."""
    index = [0] + list(range(-keep + 1, 0))
    return values[:, index]


@dataclass
class EncodedPrompts:
    embeds: torch.Tensor            # (B, 300, hidden), the encoder's dtype and device
    mask: torch.Tensor              # (B, 300) bool, True where a real token sits
    truncated: list[bool]           # per prompt: the tokenizer cut its tail off
    texts: list[str] = field(default_factory=list)  # the exact strings given to the tokenizer (CHI included)

    def __len__(self) -> int:
        return self.embeds.shape[0]


@dataclass
class _CacheEntry:
    embeds: torch.Tensor  # (1, 300, hidden)
    mask: torch.Tensor    # (1, 300) bool
    truncated: bool


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    # Official: Gemma in bf16. bf16 matmuls on a CPU are slow and lossy, so the CPU fallback runs fp32.
    return torch.bfloat16 if device.type == "cuda" else torch.float32


class TextEncoder:
    """Prompt text -> (B, 300, hidden) caption embeddings plus mask, with an LRU cache per prompt."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        chi: str | tuple[str, ...] | list[str] | None = DEFAULT_CHI_VARIANT,
        negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
        lowercase: bool = False,
        cache_size: int = 64,
        offload_after_encode: bool = False,
    ) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = dtype if dtype is not None else default_dtype(self.device)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "right"  # official: BOS at 0, real tokens first, padding after
        self.chi_text = resolve_chi(chi)
        self.negative_prompt = negative_prompt
        self.lowercase = lowercase  # diffusers lowercases prompts; the official script does not (default off)
        self.cache_size = int(cache_size)
        self.offload_after_encode = offload_after_encode
        self._cache: OrderedDict[tuple, _CacheEntry] = OrderedDict()
        self.forward_calls = 0  # number of encoder forward passes run (cache diagnostics)
        # len(tokenize(CHI)) counts BOS; "+ 300 - 2" is the official magic number ([bos] and the joining token).
        self.positive_max_length = (
            len(self.tokenizer.encode(self.chi_text)) + MAX_TEXT_TOKENS - 2 if self.chi_text else MAX_TEXT_TOKENS
        )

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        text_encoder_dir: str | os.PathLike,
        tokenizer_dir: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        **kwargs,
    ) -> TextEncoder:
        """Load a Gemma-2 folder in the HF layout (config.json + safetensors, sharded or not) and its tokenizer."""
        from transformers import AutoTokenizer, Gemma2Model

        text_encoder_dir = Path(text_encoder_dir)
        tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir is not None else text_encoder_dir
        for folder, what in ((text_encoder_dir, "text encoder"), (tokenizer_dir, "tokenizer")):
            if not folder.is_dir():
                raise CheckpointError(f"The {what} folder {folder} does not exist.")
        if not (text_encoder_dir / "config.json").is_file():
            raise CheckpointError(f"The text encoder folder {text_encoder_dir} has no config.json.")
        device = torch.device(device) if device is not None else default_device()
        dtype = dtype if dtype is not None else default_dtype(device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
            # Eager attention: Gemma-2 soft-caps attention logits, which SDPA cannot do.
            model, info = Gemma2Model.from_pretrained(
                str(text_encoder_dir), dtype=dtype, attn_implementation="eager", output_loading_info=True
            )
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"Could not load the Gemma-2 text encoder from {text_encoder_dir}: {exc}") from exc
        # transformers would silently fill missing tensors with random values; a broken download must fail instead.
        # (Unexpected keys such as a CausalLM's lm_head are fine: only the decoder is used.)
        bad = sorted(info.get("missing_keys") or []) + sorted(str(k) for k in info.get("mismatched_keys") or [])
        if bad:
            shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
            raise CheckpointError(f"The text encoder in {text_encoder_dir} is missing or has misshapen tensors: {shown}")
        model.requires_grad_(False)
        return cls(model.to(device), tokenizer, device=device, dtype=dtype, **kwargs)

    # ---------------------------------------------------------------- encoding
    def positive_text(self, prompt: str, motion_score: float | None = DEFAULT_MOTION_SCORE) -> str:
        prompt = prompt.strip()
        if self.lowercase:
            prompt = prompt.lower()
        return self.chi_text + prompt + motion_suffix(motion_score)

    def encode(self, prompts: list[str] | str, motion_score: float | None = DEFAULT_MOTION_SCORE) -> EncodedPrompts:
        """Positive prompts -> EncodedPrompts with embeds (B, 300, hidden) and mask (B, 300)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts:
            raise ValueError("encode() needs at least one prompt")
        texts = [self.positive_text(p, motion_score) for p in prompts]
        return self._encode_texts(texts, self.positive_max_length, select=bool(self.chi_text), labels=list(prompts))

    def encode_negative(self, prompt: str | None = None) -> EncodedPrompts:
        """The negative prompt (default: the official one), without CHI, 300 tokens: embeds (1, 300, hidden)."""
        text = self.negative_prompt if prompt is None else prompt
        if self.lowercase:
            text = text.lower().strip()
        return self._encode_texts([text], MAX_TEXT_TOKENS, select=False, labels=["negative prompt"])

    def _cache_key(self, text: str, max_length: int, select: bool) -> tuple:
        return (text, max_length, select, str(self.dtype), str(self.device))

    def _encode_texts(self, texts: list[str], max_length: int, select: bool, labels: list[str]) -> EncodedPrompts:
        keys = [self._cache_key(t, max_length, select) for t in texts]
        # Resolve every hit before inserting anything: an insertion may evict an entry this batch still needs.
        entries: list[_CacheEntry | None] = [self._cache.get(k) for k in keys]
        for key, entry in zip(keys, entries):
            if entry is not None:
                self._cache.move_to_end(key)
        missing = [i for i, entry in enumerate(entries) if entry is None]
        if missing:
            unique = list(dict.fromkeys(texts[i] for i in missing))  # a prompt repeated in the batch runs once
            embeds, mask, truncated = self._run_encoder(unique, max_length, select)
            by_text = {t: _CacheEntry(embeds[j : j + 1], mask[j : j + 1], truncated[j]) for j, t in enumerate(unique)}
            for i in missing:
                entries[i] = by_text[texts[i]]
                self._cache_put(keys[i], entries[i])
        truncated_flags = [e.truncated for e in entries]
        for label, was_cut in zip(labels, truncated_flags):
            if was_cut:  # reported on every use, cached or not: never silent
                warnings.warn(
                    f"Prompt {label[:60]!r}{'...' if len(label) > 60 else ''} is longer than the text encoder's "
                    f"{MAX_TEXT_TOKENS}-token window; its end was cut off.",
                    PromptTruncatedWarning,
                    stacklevel=3,
                )
        return EncodedPrompts(
            embeds=torch.cat([e.embeds for e in entries], dim=0),
            mask=torch.cat([e.mask for e in entries], dim=0),
            truncated=truncated_flags,
            texts=list(texts),
        )

    def _cache_put(self, key: tuple, entry: _CacheEntry) -> None:
        if self.cache_size <= 0:
            return
        self._cache[key] = entry
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def clear_cache(self) -> None:
        self._cache.clear()

    @torch.no_grad()
    def _run_encoder(self, texts: list[str], max_length: int, select: bool):
        tokens = self.tokenizer(
            texts, max_length=max_length, padding="max_length", truncation=True, add_special_tokens=True,
            return_tensors="pt",
        )
        # Truncation check: the untruncated length (with special tokens) exceeds the window.
        full_lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=True)["input_ids"]]
        truncated = [n > max_length for n in full_lengths]
        self._ensure_on_device()
        input_ids = tokens["input_ids"].to(self.device)             # (B, L)
        attention_mask = tokens["attention_mask"].to(self.device)   # (B, L)
        try:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, hid)
            self.forward_calls += 1
        finally:
            if self.offload_after_encode:
                self.offload()
        hidden = hidden.to(self.dtype)
        mask = attention_mask.bool()
        if select:
            hidden = select_prompt_tokens(hidden)  # (B, 300, hid)
            mask = select_prompt_tokens(mask)      # (B, 300)
        return hidden, mask, truncated

    # ---------------------------------------------------------------- placement
    def _ensure_on_device(self) -> None:
        param = next(self.model.parameters(), None)
        if param is not None and param.device != self.device:
            self.model.to(self.device)

    def offload(self) -> None:
        """Move the encoder weights to the CPU (frees GPU memory between prompts; the cache stays usable)."""
        self.model.to("cpu")
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)


# -------------------------------------------------------------------- tiny random Gemma for the demo pack
_TINY_TOKENIZER_SENTENCES = (
    "A cat sleeping on a sunny windowsill.",
    "A red fox runs through fresh snow in a quiet forest at dawn.",
    "Waves crash against dark cliffs while seagulls circle overhead.",
    "A lighthouse glows at night; the camera slowly pans across the calm sea.",
    "A small robot walks down a neon city street in the rain.",
    "Clouds drift over green mountains and a river winds through the valley.",
    "the the a an and of in on with at to from by for is are motion score: 10. 30. high low",
    "0 1 2 3 4 5 6 7 8 9 , . ; : ! ? ' \" - ( ) > <",
)


def _tiny_tokenizer_corpus() -> list[str]:
    return [*IMAGE_CHI, *VIDEO_CHI, DEFAULT_NEGATIVE_PROMPT, *_TINY_TOKENIZER_SENTENCES]


def build_tiny_tokenizer():
    """A word-level tokenizer built fully offline, with Gemma's special-token ids (pad 0, eos 1, bos 2, unk 3)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(_tiny_tokenizer_corpus(), trainer=trainers.WordLevelTrainer(special_tokens=specials))
    # Like Gemma: BOS in front of every sequence, no EOS.
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", tok.token_to_id("<bos>"))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        padding_side="right", model_max_length=8192,
    )
    return fast


def tiny_gemma_config(hidden_size: int, vocab_size: int, num_layers: int = 2):
    from transformers import Gemma2Config

    heads = 2
    return Gemma2Config(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=heads, num_key_value_heads=1, head_dim=8,
        query_pre_attn_scalar=8, max_position_embeddings=2048, sliding_window=64,
        pad_token_id=0, eos_token_id=1, bos_token_id=2, architectures=["Gemma2Model"],
    )


def write_tiny_text_encoder(
    text_encoder_dir: str | os.PathLike, tokenizer_dir: str | os.PathLike, hidden_size: int, seed: int = 0,
    num_layers: int = 2,
) -> None:
    """Write a tiny RANDOM Gemma-2 (HF layout: config.json + model.safetensors) and its tokenizer.

    Both load through `TextEncoder.from_pretrained` exactly like the real Gemma. Every file lands atomically."""
    from transformers import Gemma2Model

    tokenizer = build_tiny_tokenizer()
    config = tiny_gemma_config(hidden_size, vocab_size=len(tokenizer), num_layers=num_layers)
    with _fork_rng(seed):
        model = Gemma2Model(config).eval()
        # Gemma's norms start at zero weight (scale 1 + w); random ones make the features prompt-dependent enough.
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "norm" in name:
                    param.normal_(0.0, 0.1)
    _save_pretrained_atomically(model, Path(text_encoder_dir))
    _save_pretrained_atomically(tokenizer, Path(tokenizer_dir))


@contextlib.contextmanager
def _fork_rng(seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _save_pretrained_atomically(obj, target: Path) -> None:
    """`save_pretrained` into a scratch folder next to `target`, then move each file in with an atomic write."""
    from transformers.utils import logging as hf_logging

    target.mkdir(parents=True, exist_ok=True)
    bars = hf_logging.is_progress_bar_enabled()
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as scratch:
        hf_logging.disable_progress_bar()  # no "Writing model shards" bar for a few-kilobyte file
        try:
            obj.save_pretrained(scratch)
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        for path in sorted(Path(scratch).rglob("*")):
            if path.is_file():
                atomic_write_bytes(target / path.relative_to(scratch), path.read_bytes())
