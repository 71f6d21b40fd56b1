"""Provider presets, remote references, address discovery and the models they build.

No network: ``foundry`` is a script on a temporary PATH, HTTP goes to ``httpx.MockTransport``.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest

from shoal.exceptions import UnknownModelError, UserError
from shoal.messages import UserMessage
from shoal.models import ModelRequestParameters
from shoal.models.capabilities import Capabilities
from shoal.models.openai_compat import OpenAICompatModel
from shoal.models.providers import (
    AZURE_AI_API_VERSION,
    AZURE_OPENAI_API_VERSION,
    PROVIDERS,
    RemoteReference,
    discover_base_url,
    is_remote_reference,
    ollama_base_url,
    parse_remote_reference,
    remote_model,
)

#: every variable the presets read, cleared so that the developer's own settings do not leak in
_ENV = (
    "OLLAMA_HOST",
    "OLLAMA_API_KEY",
    "SHOAL_ENDPOINT",
    "SHOAL_API_KEY",
    "SHOAL_REMOTE_API_KEY",
    "VLLM_API_KEY",
    "LLAMA_API_KEY",
    "FOUNDRY_LOCAL_ENDPOINT",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_API_VERSION",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_API_KEY",
    "AZURE_AI_CHAT_ENDPOINT",
    "AZURE_AI_CHAT_KEY",
    "AZURE_INFERENCE_ENDPOINT",
    "AZURE_INFERENCE_CREDENTIAL",
    "AZURE_AI_API_VERSION",
)

KNOWN = Capabilities(server="unknown", probed=True)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)


# -- references -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("ollama:qwen2.5:0.5b", RemoteReference("ollama", "qwen2.5:0.5b")),
        (
            "vllm:http://h:8000/v1#Qwen/Qwen2.5-0.5B-Instruct",
            RemoteReference("vllm", "Qwen/Qwen2.5-0.5B-Instruct", "http://h:8000/v1"),
        ),
        ("openai:gpt-4o-mini", RemoteReference("openai", "gpt-4o-mini")),
        ("azure:my-deployment", RemoteReference("azure", "my-deployment")),
        ("foundry:phi-4-mini", RemoteReference("foundry", "phi-4-mini")),
        ("openai-compat:http://h/v1/#m", RemoteReference("openai-compat", "m", "http://h/v1")),
        ("shoal:qwen2.5-0.5b:q8_0", RemoteReference("shoal", "qwen2.5-0.5b:q8_0")),
        (
            "azure-ai:https://r.services.ai.azure.com/models#Llama-3.3-70B-Instruct",
            RemoteReference(
                "azure-ai", "Llama-3.3-70B-Instruct", "https://r.services.ai.azure.com/models"
            ),
        ),
    ],
)
def test_parse_remote_reference(ref: str, expected: RemoteReference) -> None:
    parsed = parse_remote_reference(ref)
    assert parsed == expected
    assert is_remote_reference(ref)
    assert parse_remote_reference(str(parsed)) == parsed  # str() writes it back


@pytest.mark.parametrize(
    "ref", ["qwen2.5-0.5b:q8_0", "smollm2-135m", "C:\\models\\x.gguf", "hf:org/repo", "ollama"]
)
def test_catalog_references_are_not_remote(ref: str) -> None:
    assert parse_remote_reference(ref) is None
    assert not is_remote_reference(ref)


@pytest.mark.parametrize(
    ("ref", "problem"),
    [
        ("ollama:", "names no model"),
        ("vllm:http://h:8000/v1", "gives a URL but no model"),
        ("vllm:http://h:8000/v1#", "gives a URL but no model"),
        ("openai-compat:http://#m", "is not an http"),
    ],
)
def test_malformed_remote_references_say_how_to_write_them(ref: str, problem: str) -> None:
    assert is_remote_reference(ref)
    with pytest.raises(UserError, match=problem):
        parse_remote_reference(ref)


def test_every_preset_is_described() -> None:
    assert set(PROVIDERS) == {
        "shoal",
        "ollama",
        "vllm",
        "llama-server",
        "llamacpp-server",
        "lmstudio",
        "foundry",
        "openai",
        "azure",
        "azure-ai",
        "openai-compat",
    }
    for name, preset in PROVIDERS.items():
        assert preset.name == name
        assert preset.description
        if not preset.local:
            assert preset.key_required
            assert preset.api_key_env
        if name != "openai-compat":
            assert preset.source  # where the defaults come from


# -- discovery ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "base_url"),
    [  # the cases of ollama-python's _parse_host doctests, plus /v1
        (None, "http://127.0.0.1:11434/v1"),
        ("", "http://127.0.0.1:11434/v1"),
        ("1.2.3.4", "http://1.2.3.4:11434/v1"),
        (":56789", "http://127.0.0.1:56789/v1"),
        ("1.2.3.4:56789", "http://1.2.3.4:56789/v1"),
        ("http://1.2.3.4", "http://1.2.3.4:80/v1"),
        ("https://1.2.3.4", "https://1.2.3.4:443/v1"),
        ("https://example.com:56789", "https://example.com:56789/v1"),
        ("example.com/", "http://example.com:11434/v1"),
        ("example.com:56789/path/", "http://example.com:56789/path/v1"),
        ("[0001:002:003:0004::1]:56789", "http://[0001:002:003:0004::1]:56789/v1"),
        # what the server listens on is reached on loopback
        ("0.0.0.0", "http://127.0.0.1:11434/v1"),
        ("0.0.0.0:11500", "http://127.0.0.1:11500/v1"),
        ("[::]:11434", "http://[::1]:11434/v1"),
    ],
)
def test_ollama_host(host: str | None, base_url: str) -> None:
    assert ollama_base_url(host) == base_url


def test_ollama_host_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert discover_base_url("ollama") == "http://127.0.0.1:11434/v1"
    monkeypatch.setenv("OLLAMA_HOST", "gpu-box:11500")
    assert discover_base_url("ollama") == "http://gpu-box:11500/v1"
    monkeypatch.setenv("OLLAMA_HOST", "ftp://gpu-box")
    with pytest.raises(UserError, match="OLLAMA_HOST"):
        discover_base_url("ollama")


def test_fixed_defaults_and_url_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    assert discover_base_url("vllm") == "http://localhost:8000/v1"
    assert discover_base_url("llama-server") == "http://127.0.0.1:8080/v1"
    assert discover_base_url("lmstudio") == "http://localhost:1234/v1"
    assert discover_base_url("shoal") == "http://127.0.0.1:8000/v1"
    assert discover_base_url("openai") == "https://api.openai.com/v1"
    monkeypatch.setenv("SHOAL_ENDPOINT", "http://shoal-host:9000/")
    assert discover_base_url("shoal") == "http://shoal-host:9000/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", "https://proxy.example/v1/")
    assert discover_base_url("openai") == "https://proxy.example/v1"
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com/")
    assert discover_base_url("azure") == "https://res.openai.azure.com"
    monkeypatch.setenv("AZURE_INFERENCE_ENDPOINT", "https://r.services.ai.azure.com/models")
    assert discover_base_url("azure-ai") == "https://r.services.ai.azure.com/models"


@pytest.mark.parametrize(
    ("provider", "what_to_do"),
    [
        ("azure", "AZURE_OPENAI_ENDPOINT=https://<resource>.openai.azure.com"),
        ("azure-ai", "AZURE_AI_CHAT_ENDPOINT=https://<resource>.services.ai.azure.com/models"),
        ("openai-compat", "openai-compat:http://host:port/v1#<model id>"),
    ],
)
def test_an_address_that_cannot_be_found_says_what_to_set(provider: str, what_to_do: str) -> None:
    with pytest.raises(UserError) as raised:
        discover_base_url(provider)
    assert what_to_do in str(raised.value)


def test_unknown_provider() -> None:
    with pytest.raises(UnknownModelError, match="unknown provider 'nope'"):
        discover_base_url("nope")


def test_a_bad_url_in_the_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "api.openai.com/v1")
    with pytest.raises(UserError, match="OPENAI_BASE_URL"):
        discover_base_url("openai")


# -- Foundry Local --------------------------------------------------------------------------


def fake_foundry(directory: Path, script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``foundry`` executable in ``directory``, first on PATH."""
    path = directory / "foundry"
    path.write_text(f"#!/bin/sh\n{script}\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ.get('PATH', '')}")


#: what `foundry service status` prints while the service runs (the port changes per start)
RUNNING = "🟢 Model management service is running on http://127.0.0.1:51995/openai/status"


def test_foundry_url_from_service_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_foundry(
        tmp_path, f'[ "$1 $2" = "service status" ] || exit 2\necho "{RUNNING}"', monkeypatch
    )
    assert discover_base_url("foundry") == "http://127.0.0.1:51995/v1"


def test_foundry_endpoint_variable_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_foundry(tmp_path, "exit 1", monkeypatch)  # would fail if it were run
    monkeypatch.setenv("FOUNDRY_LOCAL_ENDPOINT", "http://127.0.0.1:60000")
    assert discover_base_url("foundry") == "http://127.0.0.1:60000/v1"
    monkeypatch.setenv("FOUNDRY_LOCAL_ENDPOINT", "http://127.0.0.1:60000/v1/")
    assert discover_base_url("foundry") == "http://127.0.0.1:60000/v1"


def test_foundry_service_not_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_foundry(tmp_path, 'echo "🔴 Model management service is not running!"', monkeypatch)
    with pytest.raises(UserError, match="foundry service start") as raised:
        discover_base_url("foundry")
    assert "FOUNDRY_LOCAL_ENDPOINT" in str(raised.value)


def test_foundry_not_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(UserError, match="not on PATH") as raised:
        discover_base_url("foundry")
    assert "FOUNDRY_LOCAL_ENDPOINT" in str(raised.value)


def test_foundry_status_that_hangs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shoal.models.providers.FOUNDRY_STATUS_TIMEOUT", 0.3)
    fake_foundry(tmp_path, "exec sleep 10", monkeypatch)
    with pytest.raises(UserError, match=r"did not answer within 0\.3 s"):
        discover_base_url("foundry")


# -- remote_model ---------------------------------------------------------------------------


def test_ollama_model() -> None:
    model = remote_model("ollama:qwen2.5:0.5b")
    assert isinstance(model, OpenAICompatModel)
    assert model.model == "qwen2.5:0.5b"
    assert model.base_url == "http://127.0.0.1:11434/v1"
    assert model.name == "ollama:qwen2.5:0.5b"
    assert model.provider == "ollama"
    assert model.api_key is None
    assert model.auth_header == "bearer"
    assert model.query == {}
    assert model.capabilities is None  # probed on first use


def test_url_in_the_reference_and_base_url_argument() -> None:
    model = remote_model("vllm:http://gpu:8000/v1#Qwen/Qwen2.5-0.5B-Instruct")
    assert (model.base_url, model.model) == ("http://gpu:8000/v1", "Qwen/Qwen2.5-0.5B-Instruct")
    assert model.name == "vllm:Qwen/Qwen2.5-0.5B-Instruct"
    model = remote_model("vllm:http://gpu:8000/v1#m", base_url="http://other:9000/v1")
    assert model.base_url == "http://other:9000/v1"
    model = remote_model(RemoteReference("lmstudio", "qwen2.5-7b-instruct"))
    assert model.base_url == "http://localhost:1234/v1"


def test_options_are_passed_on() -> None:
    caps = Capabilities(server="vllm", tool_choice=True, probed=True)
    model = remote_model("vllm:m", timeout=7.5, capabilities=caps)
    assert model.timeout == 7.5
    assert model.capabilities is caps
    assert remote_model("vllm:m").timeout > 0  # the backend's default


def test_openai_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match="set OPENAI_API_KEY"):
        remote_model("openai:gpt-4o-mini")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    model = remote_model("openai:gpt-4o-mini")
    assert (model.api_key, model.api_key_env) == ("sk-test", "OPENAI_API_KEY")
    assert model.base_url == "https://api.openai.com/v1"
    assert model.auth_header == "bearer"
    explicit = remote_model("openai:gpt-4o-mini", api_key="sk-arg")
    assert (explicit.api_key, explicit.api_key_env) == ("sk-arg", None)


def test_local_servers_take_an_optional_key(monkeypatch: pytest.MonkeyPatch) -> None:
    model = remote_model("vllm:m")
    assert (model.api_key, model.api_key_env) == (None, "VLLM_API_KEY")
    monkeypatch.setenv("VLLM_API_KEY", "token-abc123")
    assert remote_model("vllm:m").api_key == "token-abc123"
    monkeypatch.setenv("LLAMA_API_KEY", "llama-key")
    assert remote_model("llama-server:m").api_key == "llama-key"
    # another provider's key is never sent to a server it does not belong to
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    assert remote_model("openai-compat:http://h:1/v1#m").api_key is None
    assert remote_model("foundry:phi-4-mini", base_url="http://127.0.0.1:5/v1").api_key is None


def test_azure_openai(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com/")
    with pytest.raises(UserError, match="set AZURE_OPENAI_API_KEY"):
        remote_model("azure:my-deployment")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "az-key")
    model = remote_model("azure:my-deployment")
    assert model.base_url == "https://res.openai.azure.com/openai/deployments/my-deployment"
    assert model.query == {"api-version": AZURE_OPENAI_API_VERSION}
    assert (model.auth_header, model.api_key) == ("api-key", "az-key")
    assert model.provider == "azure"
    monkeypatch.setenv("OPENAI_API_VERSION", "2025-01-01-preview")
    assert remote_model("azure:d").query == {"api-version": "2025-01-01-preview"}
    # the version-less v1 API takes no api-version
    v1 = remote_model("azure:https://res.openai.azure.com/openai/v1#gpt-4o-mini")
    assert (v1.base_url, v1.query) == ("https://res.openai.azure.com/openai/v1", {})


def test_azure_without_endpoint_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "az-key")
    with pytest.raises(UserError, match="AZURE_OPENAI_ENDPOINT"):
        remote_model("azure:my-deployment")


def test_azure_ai_foundry_models_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_AI_CHAT_ENDPOINT", "https://r.services.ai.azure.com/models")
    with pytest.raises(UserError, match="AZURE_AI_CHAT_KEY or AZURE_INFERENCE_CREDENTIAL"):
        remote_model("azure-ai:Llama-3.3-70B-Instruct")
    monkeypatch.setenv("AZURE_INFERENCE_CREDENTIAL", "ai-key")
    model = remote_model("azure-ai:Llama-3.3-70B-Instruct")
    assert model.base_url == "https://r.services.ai.azure.com/models"
    assert model.model == "Llama-3.3-70B-Instruct"  # the deployment goes in the body
    assert model.query == {"api-version": AZURE_AI_API_VERSION}
    assert (model.auth_header, model.api_key) == ("api-key", "ai-key")
    assert model.api_key_env == "AZURE_INFERENCE_CREDENTIAL"


def test_not_a_remote_reference() -> None:
    with pytest.raises(UnknownModelError, match="not a remote model reference"):
        remote_model("qwen2.5-0.5b:q8_0")


async def test_azure_request_goes_to_the_deployment_with_the_key_header(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """End to end through the backend: the URL, query and header the preset chose are sent."""
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "az-key")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        message = {"role": "assistant", "content": "hi"}
        return httpx.Response(
            200,
            json={"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]},
        )

    model = remote_model(
        "azure:my-deployment",
        capabilities=KNOWN,
        transport=httpx.MockTransport(handler),
    )
    try:
        response = await model.request([UserMessage(content="hello")], ModelRequestParameters())
    finally:
        await model.close()
    assert response.text == "hi"
    (request,) = seen
    assert request.url.path == "/openai/deployments/my-deployment/chat/completions"
    assert request.url.params["api-version"] == AZURE_OPENAI_API_VERSION
    assert request.headers["api-key"] == "az-key"
    assert "authorization" not in request.headers
    body: dict[str, Any] = json.loads(request.content)
    assert body["model"] == "my-deployment"


async def test_bearer_key_is_sent_to_a_local_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_API_KEY", "token-abc123")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        message = {"role": "assistant", "content": "ok"}
        return httpx.Response(200, json={"choices": [{"message": message}]})

    model = remote_model(
        "vllm:http://gpu:8000/v1#Qwen/Qwen2.5-0.5B-Instruct",
        capabilities=KNOWN,
        transport=httpx.MockTransport(handler),
    )
    try:
        await model.request([UserMessage(content="hello")], ModelRequestParameters())
    finally:
        await model.close()
    (request,) = seen
    assert str(request.url) == "http://gpu:8000/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer token-abc123"
    assert json.loads(request.content)["model"] == "Qwen/Qwen2.5-0.5B-Instruct"
