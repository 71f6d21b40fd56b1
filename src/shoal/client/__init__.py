"""A Python client for a Shoal server (``shoal serve``): threads, agent runs, health, metrics.

```python
from shoal.client import ShoalClient

with ShoalClient("http://127.0.0.1:8000") as client:   # or SHOAL_ENDPOINT
    reply = client.send_message("Where is my order 1042?", agent="support")
    print(reply.content if reply.success else reply.error)
```

:class:`ShoalClient` is for synchronous code, :class:`AsyncShoalClient` for asyncio; both run
the same request, retry and parsing code (``_flows``). The client needs only httpx and
pydantic: importing it loads no model engine and no web framework. See ``docs/client.md``.
"""

from shoal.client._async import AsyncShoalClient
from shoal.client._config import ClientConfig
from shoal.client._errors import (
    ClientUsageError,
    ShoalAPIError,
    ShoalClientError,
    ShoalConnectionError,
)
from shoal.client._models import AgentReply, PendingCall, ThreadInfo, ToolCallInfo
from shoal.client._sync import ShoalClient

__all__ = [
    "AgentReply",
    "AsyncShoalClient",
    "ClientConfig",
    "ClientUsageError",
    "PendingCall",
    "ShoalAPIError",
    "ShoalClient",
    "ShoalClientError",
    "ShoalConnectionError",
    "ThreadInfo",
    "ToolCallInfo",
]
