"""Provider presets and remote model references.

A remote reference names a provider preset and the model id its server knows, optionally with
the server's URL::

    ollama:qwen2.5:0.5b                               # split at the first colon only
    vllm:http://gpu-box:8000/v1#Qwen/Qwen2.5-0.5B-Instruct
    openai:gpt-4o-mini
    azure:my-deployment                               # Azure OpenAI: the deployment name
    azure-ai:Llama-3.3-70B-Instruct                   # Azure AI Foundry models endpoint
    foundry:phi-4-mini                                # Foundry Local
    openai-compat:http://host:port/v1#model           # any other OpenAI-compatible server

A reference whose prefix is not a provider name is not a remote reference
(:func:`parse_remote_reference` returns None) and is left to the catalog resolver: catalog
references such as ``qwen2.5-0.5b:q8_0`` never start with a provider name.

Each :class:`Provider` says where its server usually is, which environment variables hold its
key (secrets come only from the environment or an explicit ``api_key=`` argument, never from
a reference or a file) and how the key is sent. Where the address is not fixed,
:func:`discover_base_url` finds it: ``OLLAMA_HOST`` for Ollama, ``foundry service status`` for
Foundry Local (its port changes at every start), the endpoint variables for Azure. A cloud
provider without a key, or an address that cannot be found, is a :class:`UserError` that says
what to set or run. :func:`remote_model` builds the
:class:`~shoal.models.openai_compat.OpenAICompatModel` for a reference.

============== ====================================== ==========================================
provider       address (first set wins)               key (first set wins)
============== ====================================== ==========================================
shoal          SHOAL_ENDPOINT, http://127.0.0.1:8000  SHOAL_API_KEY
ollama         OLLAMA_HOST, http://127.0.0.1:11434    OLLAMA_API_KEY (for a proxy; Ollama has none)
vllm           http://localhost:8000/v1               VLLM_API_KEY
llama-server   http://127.0.0.1:8080/v1               LLAMA_API_KEY
llamacpp-server http://localhost:8000/v1              SHOAL_REMOTE_API_KEY
lmstudio       http://localhost:1234/v1               SHOAL_REMOTE_API_KEY
foundry        FOUNDRY_LOCAL_ENDPOINT, ``foundry      (none)
               service status``
openai         OPENAI_BASE_URL, https://api.openai.   OPENAI_API_KEY (required)
               com/v1
azure          AZURE_OPENAI_ENDPOINT (+ deployment,   AZURE_OPENAI_API_KEY (required, api-key
               api-version: OPENAI_API_VERSION)       header)
azure-ai       AZURE_AI_CHAT_ENDPOINT,                AZURE_AI_CHAT_KEY, AZURE_INFERENCE_
               AZURE_INFERENCE_ENDPOINT (api-version: CREDENTIAL (required, api-key header)
               AZURE_AI_API_VERSION)
openai-compat  the reference's URL                    SHOAL_REMOTE_API_KEY
============== ====================================== ==========================================

``FOUNDRY_LOCAL_ENDPOINT``, ``SHOAL_REMOTE_API_KEY`` and ``AZURE_AI_API_VERSION`` are Shoal's
own names (those tools define none); the others are the variables the servers or their
official clients read.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from shoal.exceptions import UnknownModelError, UserError
from shoal.models.capabilities import Capabilities
from shoal.models.openai_compat import OpenAICompatModel

if TYPE_CHECKING:
    import httpx

__all__ = [
    "AZURE_AI_API_VERSION",
    "AZURE_OPENAI_API_VERSION",
    "PROVIDERS",
    "Provider",
    "RemoteReference",
    "discover_base_url",
    "foundry_base_url",
    "is_remote_reference",
    "ollama_base_url",
    "parse_remote_reference",
    "remote_model",
]

#: Azure OpenAI data-plane inference API version used unless ``OPENAI_API_VERSION`` is set:
#: the latest GA release listed in "Azure OpenAI Service REST API reference"
#: (https://learn.microsoft.com/azure/ai-services/openai/reference, "Data plane - inference").
AZURE_OPENAI_API_VERSION = "2024-10-21"
#: Azure AI Model Inference API version, the one the azure-ai-inference client library calls
#: ("makes services calls using REST API version 2024-05-01-preview",
#: https://pypi.org/project/azure-ai-inference/).
AZURE_AI_API_VERSION = "2024-05-01-preview"

#: Shoal's own variable for a key to a server whose software defines none (openai-compat,
#: LM Studio with authentication on, llama-cpp-python's server started with --api-key)
GENERIC_KEY_ENV = "SHOAL_REMOTE_API_KEY"

#: how long ``foundry service status`` may take, seconds
FOUNDRY_STATUS_TIMEOUT = 5.0


@dataclass(frozen=True)
class Provider:
    """A kind of OpenAI-compatible server and how to reach it."""

    name: str
    description: str
    #: the usual base URL (ending in ``/v1`` or the API's root); None when it must be
    #: discovered (:func:`discover_base_url`) or given in the reference
    base_url: str | None
    #: environment variables tried in order for the API key (secrets only come from there)
    api_key_env: tuple[str, ...] = ()
    #: ``bearer``: ``Authorization: Bearer <key>``; ``api-key``: an ``api-key: <key>`` header
    auth_header: Literal["bearer", "api-key"] = "bearer"
    #: runs on this machine or the local network (no key needed, no cost per token)
    local: bool = True
    #: a request without a key cannot work: a missing key is an error before any request
    key_required: bool = False
    #: environment variables tried in order for the address, before :attr:`base_url`
    url_env: tuple[str, ...] = ()
    #: where the defaults come from
    source: str = ""


PROVIDERS: dict[str, Provider] = {
    provider.name: provider
    for provider in (
        Provider(
            name="shoal",
            description="another Shoal server (shoal serve)",
            base_url="http://127.0.0.1:8000/v1",
            api_key_env=("SHOAL_API_KEY",),
            url_env=("SHOAL_ENDPOINT",),
            # shoal.server.settings (port 8000) and shoal.client (SHOAL_ENDPOINT, SHOAL_API_KEY)
            source="shoal serve defaults; the Shoal client's environment variables",
        ),
        Provider(
            name="ollama",
            description="Ollama's OpenAI-compatible API",
            base_url=None,  # OLLAMA_HOST, else http://127.0.0.1:11434
            # Ollama ignores the key; set one only for a proxy in front of it
            api_key_env=("OLLAMA_API_KEY",),
            # host parsing as ollama-python's _parse_host (ollama/_client.py); base URL
            # http://localhost:11434/v1 per docs.ollama.com/api/openai-compatibility
            source="https://docs.ollama.com/api/openai-compatibility; ollama-python _parse_host",
        ),
        Provider(
            name="vllm",
            description="vLLM's OpenAI-compatible server (vllm serve)",
            # "This starts a server on http://localhost:8000" (vllm serve --port default 8000);
            # the server checks --api-key or VLLM_API_KEY
            base_url="http://localhost:8000/v1",
            api_key_env=("VLLM_API_KEY",),
            source="https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html",
        ),
        Provider(
            name="llama-server",
            description="llama.cpp's llama-server",
            # "The server will listen on http://127.0.0.1:8080 by default"; --api-key is also
            # read from LLAMA_API_KEY (common/arg.cpp: set_env("LLAMA_API_KEY"))
            base_url="http://127.0.0.1:8080/v1",
            api_key_env=("LLAMA_API_KEY",),
            source="llama.cpp tools/server/README.md; common/arg.cpp",
        ),
        Provider(
            name="llamacpp-server",
            description="llama-cpp-python's server (python -m llama_cpp.server)",
            # llama_cpp/server/settings.py: port default 8000
            base_url="http://localhost:8000/v1",
            api_key_env=(GENERIC_KEY_ENV,),
            source="llama_cpp/server/settings.py (ServerSettings.port = 8000)",
        ),
        Provider(
            name="lmstudio",
            description="LM Studio's local server",
            # "Note: The following examples assume the server port is 1234 ...
            # base_url="http://localhost:1234/v1""
            base_url="http://localhost:1234/v1",
            api_key_env=(GENERIC_KEY_ENV,),
            source="https://lmstudio.ai/docs/api/openai-api",
        ),
        Provider(
            name="foundry",
            description="Microsoft Foundry Local",
            # the port is assigned at every service start: `foundry service status` prints
            # "... service is running on http://127.0.0.1:<port>/openai/status"; the SDK's
            # endpoint is that root + "/v1" (foundry_local/api.py FoundryLocalManager.endpoint)
            base_url=None,
            url_env=("FOUNDRY_LOCAL_ENDPOINT",),
            source="https://github.com/microsoft/Foundry-Local (sdk/python, PR #447: dynamic port)",
        ),
        Provider(
            name="openai",
            description="OpenAI's API",
            base_url="https://api.openai.com/v1",
            api_key_env=("OPENAI_API_KEY",),
            local=False,
            key_required=True,
            # the openai client's own variables
            url_env=("OPENAI_BASE_URL",),
            source="https://platform.openai.com/docs/api-reference (openai-python env vars)",
        ),
        Provider(
            name="azure",
            description="Azure OpenAI (a deployment of an OpenAI model)",
            # https://<resource>.openai.azure.com/openai/deployments/<deployment>/chat/completions
            # ?api-version=...; key in the api-key header; variables as the openai client's
            # AzureOpenAI (AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_KEY, OPENAI_API_VERSION)
            base_url=None,
            api_key_env=("AZURE_OPENAI_API_KEY",),
            auth_header="api-key",
            local=False,
            key_required=True,
            url_env=("AZURE_OPENAI_ENDPOINT",),
            source="https://learn.microsoft.com/azure/ai-services/openai/reference",
        ),
        Provider(
            name="azure-ai",
            description="Azure AI Foundry models endpoint (Azure AI Model Inference API)",
            # https://<resource>.services.ai.azure.com/models + /chat/completions, the
            # deployment name as "model" in the body; variables as the azure-ai-inference
            # samples (AZURE_AI_CHAT_ENDPOINT / AZURE_AI_CHAT_KEY) and Microsoft's
            # azure-ai-inference skill (AZURE_INFERENCE_ENDPOINT / AZURE_INFERENCE_CREDENTIAL)
            base_url=None,
            api_key_env=("AZURE_AI_CHAT_KEY", "AZURE_INFERENCE_CREDENTIAL"),
            auth_header="api-key",
            local=False,
            key_required=True,
            url_env=("AZURE_AI_CHAT_ENDPOINT", "AZURE_INFERENCE_ENDPOINT"),
            source="https://learn.microsoft.com/azure/ai-foundry/foundry-models/how-to/inference",
        ),
        Provider(
            name="openai-compat",
            description="any other OpenAI-compatible server (the URL is part of the reference)",
            base_url=None,
            api_key_env=(GENERIC_KEY_ENV,),
            source="",
        ),
    )
}


@dataclass(frozen=True)
class RemoteReference:
    """A parsed remote reference: ``provider:model`` or ``provider:URL#model``."""

    provider: str
    model: str
    base_url: str | None = None

    def __str__(self) -> str:
        if self.base_url:
            return f"{self.provider}:{self.base_url}#{self.model}"
        return f"{self.provider}:{self.model}"


def _check_url(url: str, where: str) -> str:
    """``url`` without a trailing slash, or a UserError saying what is wrong with it."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UserError(f"{where}: {url!r} is not an http(s) URL such as http://host:8000/v1")
    return url.rstrip("/")


def parse_remote_reference(ref: str) -> RemoteReference | None:
    """The remote reference ``ref`` names, or None when ``ref`` does not start with a provider
    name (then it is a catalog reference). A reference that starts with one but is malformed
    (no model, a URL without ``#model``) is a :class:`UserError` saying how to write it."""
    prefix, colon, rest = ref.strip().partition(":")
    if not colon or prefix not in PROVIDERS:
        return None
    rest = rest.strip()
    if rest.startswith(("http://", "https://")):
        url, hash_, model = rest.partition("#")
        model = model.strip()
        if not hash_ or not model:
            raise UserError(
                f"{ref!r} gives a URL but no model: write {prefix}:{url}#<model id>, "
                "the id the server lists under /v1/models"
            )
        return RemoteReference(prefix, model, _check_url(url, ref))
    if not rest:
        raise UserError(f"{ref!r} names no model: write {prefix}:<model id>")
    return RemoteReference(prefix, rest)


def is_remote_reference(ref: str) -> bool:
    """True when ``ref`` starts with a provider name (even if the rest is malformed)."""
    prefix, colon, _ = ref.strip().partition(":")
    return bool(colon) and prefix in PROVIDERS


# -- discovery ------------------------------------------------------------------------------


def _provider(name: str) -> Provider:
    try:
        return PROVIDERS[name]
    except KeyError:
        known = ", ".join(sorted(PROVIDERS))
        raise UnknownModelError(f"unknown provider {name!r}; known: {known}") from None


def _env_named(names: tuple[str, ...]) -> tuple[str, str] | None:
    """The first of ``names`` set (non-blank) in the environment, and its value."""
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return name, value
    return None


def _env(names: tuple[str, ...]) -> str | None:
    found = _env_named(names)
    return found[1] if found else None


def _with_v1(root: str) -> str:
    root = root.rstrip("/")
    return root if root.endswith("/v1") else f"{root}/v1"


def ollama_base_url(host: str | None) -> str:
    """The ``/v1`` base URL for an ``OLLAMA_HOST`` value (``host[:port]``, scheme optional,
    default ``127.0.0.1:11434``), read as the Ollama client reads it (ollama-python
    ``_parse_host``): no scheme means http and port 11434; a scheme without a port means 80 or
    443. A listen-on-everything address (``0.0.0.0``, ``::``) is reached on loopback."""
    host = (host or "").strip()
    scheme, sep, hostport = host.partition("://")
    port = 11434
    if not sep:
        scheme, hostport = "http", host
    elif scheme == "https":
        port = 443
    elif scheme == "http":
        port = 80
    else:
        raise UserError(f"OLLAMA_HOST={host!r}: the scheme must be http or https")
    try:
        parts = urllib.parse.urlsplit(f"{scheme}://{hostport}")
        explicit_port = parts.port
    except ValueError as exc:
        raise UserError(f"OLLAMA_HOST={host!r} is not host[:port]: {exc}") from None
    hostname = parts.hostname or "127.0.0.1"
    try:
        address = ipaddress.ip_address(hostname)
    except ValueError:
        address = None
    if address is not None and address.is_unspecified:
        hostname = "127.0.0.1" if address.version == 4 else "::1"
        address = ipaddress.ip_address(hostname)
    if address is not None and address.version == 6:
        hostname = f"[{hostname}]"
    path = parts.path.strip("/")
    root = f"{scheme}://{hostname}:{explicit_port or port}"
    return _with_v1(f"{root}/{path}" if path else root)


_FOUNDRY_URL = re.compile(r"https?://[A-Za-z0-9.\-]+(?::\d+)?|https?://\[[0-9A-Fa-f:]+\](?::\d+)?")


def foundry_base_url() -> str:
    """Foundry Local's base URL from ``foundry service status`` (the port changes at every
    service start). A UserError says what to do when the CLI is missing or the service is not
    running."""
    hint = "or set FOUNDRY_LOCAL_ENDPOINT to the URL `foundry service status` prints"
    try:
        done = subprocess.run(
            ["foundry", "service", "status"],
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=FOUNDRY_STATUS_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise UserError(
            "Foundry Local's `foundry` command is not on PATH: install Foundry Local "
            f"(https://github.com/microsoft/Foundry-Local), {hint}"
        ) from None
    except subprocess.TimeoutExpired:
        raise UserError(
            f"`foundry service status` did not answer within {FOUNDRY_STATUS_TIMEOUT:g} s: "
            f"check the Foundry Local service, {hint}"
        ) from None
    except OSError as exc:
        raise UserError(f"`foundry service status` could not run ({exc}): {hint}") from None
    match = _FOUNDRY_URL.search(f"{done.stdout}\n{done.stderr}")
    if match is None:
        raise UserError(
            "Foundry Local's service is not running (`foundry service status` printed no URL): "
            f"start it with `foundry service start` or `foundry model run <model>`, {hint}"
        )
    return _with_v1(match.group(0))


def discover_base_url(provider: str) -> str:
    """Where ``provider``'s server is, from the environment or the provider's own tools, else
    its usual address. For ``azure`` this is the resource endpoint
    (``https://<resource>.openai.azure.com``); :func:`remote_model` adds the deployment path.
    A UserError says what to set or run when there is no usual address."""
    preset = _provider(provider)
    from_env = _env(preset.url_env)
    if provider == "ollama":
        return ollama_base_url(os.environ.get("OLLAMA_HOST"))
    if provider == "shoal" and from_env:
        return _with_v1(_check_url(from_env, "SHOAL_ENDPOINT"))
    if provider == "foundry":
        if from_env:
            return _with_v1(_check_url(from_env, "FOUNDRY_LOCAL_ENDPOINT"))
        return foundry_base_url()
    if from_env:
        return _check_url(from_env, " or ".join(preset.url_env))
    if preset.base_url is not None:
        return preset.base_url
    if provider == "azure":
        raise UserError(
            "Azure OpenAI needs its endpoint: set AZURE_OPENAI_ENDPOINT="
            "https://<resource>.openai.azure.com (or write azure:https://...#<deployment>)"
        )
    if provider == "azure-ai":
        raise UserError(
            "the Azure AI Foundry models endpoint is not set: set AZURE_AI_CHAT_ENDPOINT="
            "https://<resource>.services.ai.azure.com/models "
            "(or write azure-ai:https://...#<deployment>)"
        )
    raise UserError(
        f"{provider} has no usual address: write the URL in the reference, "
        f"{provider}:http://host:port/v1#<model id>, or pass base_url="
    )


def _azure_target(url: str, deployment: str) -> tuple[str, dict[str, str]]:
    """Base URL and query for an Azure OpenAI deployment. ``url`` is the resource endpoint,
    a deployment URL, or the version-less v1 API (``.../openai/v1``, no api-version)."""
    url = url.rstrip("/")
    if url.endswith("/openai/v1"):
        return url, {}
    version = os.environ.get("OPENAI_API_VERSION", "").strip() or AZURE_OPENAI_API_VERSION
    if "/openai/deployments/" not in url:
        url = f"{url}/openai/deployments/{urllib.parse.quote(deployment, safe='')}"
    return url, {"api-version": version}


def _api_key(preset: Provider, explicit: str | None) -> tuple[str | None, str | None]:
    """The key and the environment variable it came from (for error messages)."""
    if explicit:
        return explicit, None
    found = _env_named(preset.api_key_env)
    if found is not None:
        return found[1], found[0]
    if preset.key_required:
        names = " or ".join(preset.api_key_env)
        raise UserError(f"{preset.description} needs an API key: set {names}")
    return None, preset.api_key_env[0] if preset.api_key_env else None


def remote_model(
    ref: str | RemoteReference,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    timeout: float | None = None,
    capabilities: Capabilities | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> OpenAICompatModel:
    """The model a remote reference names. ``base_url`` overrides the reference's URL and
    discovery; ``api_key`` the environment; ``capabilities`` skips probing; ``transport``
    replaces the network (tests pass an ``httpx.MockTransport``). Nothing is sent here: the
    model connects (and probes the server, unless ``capabilities`` is given) on first use."""
    reference = parse_remote_reference(ref) if isinstance(ref, str) else ref
    if reference is None:
        known = ", ".join(sorted(PROVIDERS))
        raise UnknownModelError(
            f"{ref!r} is not a remote model reference: it must start with a provider ({known})"
        )
    preset = _provider(reference.provider)
    key, key_env = _api_key(preset, api_key)
    url = base_url or reference.base_url or discover_base_url(preset.name)
    url = _check_url(url, str(reference))
    query: Mapping[str, str] = {}
    if preset.name == "azure":
        url, query = _azure_target(url, reference.model)
    elif preset.name == "azure-ai":
        version = os.environ.get("AZURE_AI_API_VERSION", "").strip() or AZURE_AI_API_VERSION
        query = {"api-version": version}
    options: dict[str, Any] = {
        "base_url": url,
        "api_key": key,
        "api_key_env": key_env,
        "name": f"{preset.name}:{reference.model}",
        "provider": preset.name,
        "auth_header": preset.auth_header,
        "query": query,
        "capabilities": capabilities,
        "transport": transport,
    }
    if timeout is not None:  # else the backend's default
        options["timeout"] = timeout
    return OpenAICompatModel(reference.model, **options)
