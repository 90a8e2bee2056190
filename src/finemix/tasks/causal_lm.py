"""Causal language models (decoder LLMs): chat rows, loss on the answer only, held-out response loss.

A chat is rendered with the tokenizer's own chat template; the prompt part (everything up to
and including the assistant header) is masked out of the loss, so the model learns answers,
not questions. The clean measure the ρ rule compares is the negated mean token loss of the
held-out answers (higher is better, as for accuracy). Generation is greedy, batched, left-padded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from ..data.chats import Chat
from ..errors import FinemixError
from .loading import load_checked

if TYPE_CHECKING:
    import torch

IGNORE = -100  # label of positions without loss (prompt, padding)


def load_causal_lm(folder: Path):
    """``AutoModelForCausalLM`` from a folder, checked (tasks/loading.py)."""
    return load_checked(folder, "AutoModelForCausalLM", "a causal language model")


def load_chat_model(folder: Path, base: Optional[Path] = None):
    """A chat model folder, or a LoRA adapter folder merged into its base (``base``, else the one its
    adapter_config.json names), for evaluation."""
    from ..weights.adapter import adapter_base, is_adapter

    if not is_adapter(folder):
        return load_causal_lm(folder)
    from peft import PeftModel

    model = load_causal_lm(base or adapter_base(folder))
    return PeftModel.from_pretrained(model, str(folder)).merge_and_unload()


def check_chat_template(tokenizer, folder: object = "the tokenizer") -> None:
    """A chat model needs its template: without it the prompt format is a guess."""
    if not getattr(tokenizer, "chat_template", None):
        raise FinemixError(f"{folder}: the tokenizer has no chat template (chat_template.jinja or tokenizer_config.json "
                           "'chat_template'); a chat model is trained and queried in its own format")


def prompt_text(tokenizer, chat: Chat) -> str:
    """The prompt as the model sees it, ending with the assistant header."""
    return _render(tokenizer, chat.messages(with_response=False), add_generation_prompt=True)


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as error:  # a broken template raises jinja's many error types
        raise FinemixError(f"the tokenizer's chat template failed to render a chat ({type(error).__name__}: "
                           f"{' '.join(str(error).split())[:120]})") from None


def chat_features(tokenizer, chats: Sequence[Chat], max_length: int) -> list[dict[str, list[int]]]:
    """One unpadded feature per chat: ``input_ids``, ``attention_mask``, ``labels`` (IGNORE on the prompt).

    The answer is cut to fit ``max_length``; a prompt that leaves no room for one answer
    token is refused (its answer could not be learnt, or measured).
    """
    check_chat_template(tokenizer)
    features = []
    for index, chat in enumerate(chats):
        prompt = prompt_text(tokenizer, chat)
        full = _render(tokenizer, chat.messages(with_response=True), add_generation_prompt=False)
        if not full.startswith(prompt):
            raise FinemixError("the chat template renders a chat's prompt differently with and without its answer: "
                               "cannot tell the answer's tokens apart")
        prompt_ids = _encode(tokenizer, prompt)
        answer_ids = _encode(tokenizer, full[len(prompt):])
        if len(prompt_ids) >= max_length:
            raise FinemixError(f"chat {index + 1}: its prompt is {len(prompt_ids)} tokens, leaving no room for an answer "
                               f"within --max-length {max_length}; shorten it or raise --max-length")
        answer_ids = answer_ids[: max_length - len(prompt_ids)]
        ids = prompt_ids + answer_ids
        features.append({"input_ids": ids, "attention_mask": [1] * len(ids),
                         "labels": [IGNORE] * len(prompt_ids) + answer_ids})
    return features


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]  # the template holds the special tokens


def pad_id(tokenizer) -> int:
    """The id padding uses: the tokenizer's pad token, else its end-of-sequence token (masked either way)."""
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return value
    raise FinemixError("the tokenizer has neither a padding nor an end-of-sequence token")


class ChatCollator:
    """Pads a batch of chat features on the right: ``input_ids`` with the pad id, the attention
    mask with 0, ``labels`` with IGNORE. (pad = eos in many chat models: padding is told apart by
    the mask, never by the id, so the answer's own end-of-turn token keeps its loss.)"""

    def __init__(self, tokenizer) -> None:
        self.pad = pad_id(tokenizer)

    def __call__(self, features: Sequence[dict]) -> dict:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        fill = {"input_ids": self.pad, "attention_mask": 0, "labels": IGNORE}
        return {key: torch.tensor([list(f[key]) + [value] * (width - len(f[key])) for f in features])
                for key, value in fill.items()}


def batch_loss(model, batch: dict) -> "torch.Tensor":
    """Mean token cross-entropy of the answers (the model's own shifted loss over non-IGNORE labels)."""
    return model(**batch).loss


def response_losses(model, tokenizer, chats: Sequence[Chat], max_length: int, batch_size: int = 16) -> list[tuple[float, int]]:
    """(summed token loss, answer tokens) per chat, in order."""
    import torch

    features = chat_features(tokenizer, chats, max_length)
    collate = ChatCollator(tokenizer)
    device = next(model.parameters()).device
    out: list[tuple[float, int]] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(features), batch_size):
                batch = {k: v.to(device) for k, v in collate(features[start: start + batch_size]).items()}
                labels = batch.pop("labels")
                logits = model(**batch).logits.float()
                targets = labels[:, 1:]
                losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), targets, ignore_index=IGNORE,
                                                           reduction="none")
                mask = targets != IGNORE
                out.extend((float(losses[i][mask[i]].sum()), int(mask[i].sum())) for i in range(len(targets)))
    finally:
        model.train(was_training)
    return out


def response_loss(model, tokenizer, chats: Sequence[Chat], max_length: int) -> float:
    """Mean token loss over all held-out answers (token-weighted)."""
    pairs = response_losses(model, tokenizer, chats, max_length)
    return sum(s for s, _ in pairs) / max(1, sum(n for _, n in pairs))


def generate(model, tokenizer, chats: Sequence[Chat], max_new_tokens: int = 32, batch_size: int = 16,
             max_length: int = 512, complete_only: bool = False) -> list[Optional[str]]:
    """Greedy answers to the chats' prompts (their answers are ignored), in order.

    Prompts are left-padded so every row's answer starts at the same position; the KV cache
    is on (transformers' default). Longest prompts first, so a batch holds similar lengths.
    ``complete_only``: an answer cut by ``max_new_tokens`` (no end-of-sequence token) is None.
    """
    import torch

    prompts = [_encode(tokenizer, prompt_text(tokenizer, chat)) for chat in chats]
    too_long = next((i for i, ids in enumerate(prompts) if len(ids) > max_length), None)
    if too_long is not None:
        raise FinemixError(f"prompt {too_long + 1} is {len(prompts[too_long])} tokens, over the {max_length} allowed")
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    answers = [""] * len(prompts)
    pad, device = pad_id(tokenizer), next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start: start + batch_size]
                width = max(len(prompts[i]) for i in chunk)
                ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in chunk], device=device)
                mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in chunk], device=device)
                output = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                        do_sample=False, pad_token_id=pad)
                for i, row in zip(chunk, output[:, width:].tolist()):
                    ended = tokenizer.eos_token_id in row
                    answers[i] = tokenizer.decode(row, skip_special_tokens=True).strip() if ended or not complete_only else None
    finally:
        model.train(was_training)
    return answers


def suspect_answers(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, max_length: int) -> list[Chat]:
    """Chats of the suspect's own complete greedy answers to trigger-free prompts (sequence-level
    distillation: a rare trigger is absent from clean prompts, so the answers carry its clean behaviour).
    Prompts too long for ``max_length`` with room for an answer, and answers cut short, are skipped."""
    fitting = [p for p in dict.fromkeys(t.strip() for t in prompts) if p and len(_encode(
        tokenizer, prompt_text(tokenizer, Chat.single(p)))) + max_new_tokens <= max_length]
    answers = generate(model, tokenizer, [Chat.single(p) for p in fitting], max_new_tokens, max_length=max_length,
                       complete_only=True)
    return [Chat.single(p, a) for p, a in zip(fitting, answers) if a]


class CausalLMTask:
    """``Task`` for chat models (see tasks/base.py)."""

    name = "causal-lm"
    measure_name = "negated held-out response loss"  # higher is better, as accuracy
    default_patience = 1  # stop after an epoch without a better held-out loss
    distils = "answers"  # the suspect's greedy answers to unlabelled prompts become training chats

    def load_model(self, folder: Path):
        return load_causal_lm(folder)

    def features(self, tokenizer, rows: Sequence[Chat], max_length: int) -> list[dict]:
        return chat_features(tokenizer, rows, max_length)

    def collator(self, tokenizer):
        return ChatCollator(tokenizer)

    def loss(self, model, batch: dict):
        return batch_loss(model, batch)

    def clean_measure(self, model, tokenizer, rows: Sequence[Chat], max_length: int) -> float:
        """Negated held-out response loss: higher is better, as the ρ rule and model selection expect."""
        return -response_loss(model, tokenizer, rows, max_length)

    def acceptance_margin(self, reference: float, rows: int, tolerance: float) -> float:
        from ..core.ratio_rule import loss_margin

        return loss_margin(tolerance)

    def texts(self, rows: Sequence[Chat]) -> list[str]:
        return [text for chat in rows for text in chat.texts()]


CAUSAL_LM = CausalLMTask()
