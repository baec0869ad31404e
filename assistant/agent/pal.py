"""Program-aided answers (PAL): the model writes a Python solution(), the sandbox runs it, its result is the answer.

Small models are poor at arithmetic and good at writing the arithmetic down as code; running that code
is exact. The program and what it printed are shown with the answer, so the user can check both.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

from assistant.agent.sandbox import Limits, run_python
from assistant.events import AgentStep, Done, Error, Event, Token
from assistant.llm.reasoning import strip_reasoning

PROGRAM_TOKENS = 400

PAL_PROMPT = """Write a Python function solution() that computes the answer to the question and returns it.
Use variables with clear names, one step per line. Return a number when the answer is a number.
Reply with the code only, in one ```python block.

Example question: Tom has 3 boxes of 12 pencils and gives away 7 pencils. How many pencils does he have left?
```python
def solution():
    boxes = 3
    pencils_per_box = 12
    given_away = 7
    return boxes * pencils_per_box - given_away
```

Question: {question}"""

_CODE = re.compile(r"```(?:python|py)?\s*\n(.*?)(?:```|$)", re.S)
# The program ends at its closing fence; this grammar keeps a small model from chatting around it.
PAL_GRAMMAR = r'''root ::= "```python\ndef solution():\n" line+ "```"
line ::= "    " [^\n]* "\n"
'''


def extract_program(text: str) -> str:
    match = _CODE.search(text)
    code = match.group(1) if match else text
    return code.strip("\n")


def run_pal(engine, question: str, stop: threading.Event | None = None, limits: Limits | None = None,
            use_grammar: bool = True, confirm=None) -> Iterator[Event]:
    prompt = engine.render([{"role": "user", "content": PAL_PROMPT.format(question=question)}])
    generation = engine.generate(engine.tokenize(prompt), max_tokens=PROGRAM_TOKENS, temperature=0.0, stop=stop,
                                 grammar=PAL_GRAMMAR if use_grammar else None)
    text = strip_reasoning("".join(generation))
    stats = generation.stats
    if stats.finish_reason == "cancelled":
        yield Done("", "cancelled", stats.prompt_tokens, stats.reused_tokens, stats.completion_tokens, stats.seconds,
                   stats.time_to_first_token, 0.0, 0.0)
        return
    code = extract_program(text)
    if "def solution" not in code:
        yield Error("The model did not write a solution() function, so there is nothing to run.")
        return
    if confirm is not None and not confirm("python", {"code": code}):
        yield AgentStep("I wrote a program that computes the answer.", "python", {"code": code},
                        "The user did not allow this program to run.", refused=True)
        yield Error("The program was not run, so there is no answer.")
        return
    result = run_python(code + "\n\nprint(solution())\n", limits, stop)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    yield AgentStep("I wrote a program that computes the answer.", "python", {"code": code}, result.observation())
    if result.exit_code != 0 or not lines:
        yield Error("The program did not produce an answer: " + result.observation()[-300:])
        return
    answer = _tidy(lines[-1].strip())
    yield Token(answer)
    yield Done(answer, "stop", stats.prompt_tokens, stats.reused_tokens, stats.completion_tokens, stats.seconds,
               stats.time_to_first_token, stats.tokens_per_second, stats.prompt_tokens_per_second)


def _tidy(value: str) -> str:
    """12.0 -> 12: a whole float printed by Python is a whole number to the user."""
    try:
        number = float(value)
    except ValueError:
        return value
    return str(int(number)) if number.is_integer() and abs(number) < 1e15 else value
