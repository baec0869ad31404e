"""Turn a list of messages into the prompt text the model was trained on.

The template is the model's own (tokenizer.chat_template in the GGUF), rendered with a
sandboxed Jinja environment as Hugging Face does. Models without one get ChatML, which most
small instruct models understand.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class ChatFormatter:
    def __init__(self, template: str | None, bos_token: str = "", eos_token: str = "") -> None:
        self.template_source = template or CHATML
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._template = _compile(self.template_source)
        self._opens: dict[bool, bool] = {}

    @property
    def native_tools(self) -> bool:
        """True when the template lays out tools itself and expects calls as <tool_call>{json}</tool_call>
        (the Hermes convention of Qwen2.5, Qwen3, Hermes and others)."""
        return "tools" in self.template_source and "<tool_call>" in self.template_source

    @property
    def can_turn_off_thinking(self) -> bool:
        """The template takes enable_thinking (Qwen3's convention, which llama.cpp's server passes too)."""
        return "enable_thinking" in self.template_source

    def opens_thinking(self, thinking: bool = True) -> bool:
        """Whether the generation prompt itself opens a think block (DeepSeek-R1's newer templates do)."""
        if thinking not in self._opens:
            from assistant.llm.reasoning import starts_in_thinking

            try:
                prompt = self.render([{"role": "user", "content": "Hi"}], thinking=thinking)
            except Exception:  # a template that refuses this tiny chat: it will say why on the real one
                prompt = ""
            self._opens[thinking] = starts_in_thinking(prompt)
        return self._opens[thinking]

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True,
               tools: list[dict] | None = None, thinking: bool = True) -> str:
        extra: dict = {"tools": tools} if tools else {}
        if not thinking:
            extra["enable_thinking"] = False  # templates that do not know it ignore it
        return self._template.render(
            messages=messages,
            **extra,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
            raise_exception=_raise,
            strftime_now=lambda fmt: datetime.now().strftime(fmt),
        )


@lru_cache(maxsize=8)
def _compile(source: str):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    # As Hugging Face renders templates: keys in their order, no HTML escaping of ' < > & (Jinja's own
    # tojson writes \u0027 for an apostrophe, which the model never saw in training).
    env.filters["tojson"] = _tojson
    return env.from_string(source)


def _tojson(value, ensure_ascii: bool = False, indent: int | None = None, separators=None,
            sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise(message: str) -> None:
    raise ValueError(f"The model's chat template refused the conversation: {message}")
