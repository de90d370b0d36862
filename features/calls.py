"""One rule for every call of the project's Redis functions (the feature engine's and the id records'):
what a refusal means, and when a batch may be replayed.

A transient refusal (``LOADING`` after a restart, ``MISCONF`` on a full disk, …) and a lost connection are
``FeatureStoreUnavailable``: the caller retries later, which is safe because every function is idempotent
per transaction id. Functions Redis lost (``NOSCRIPT``: a restart without persistence) are loaded again and
the batch replayed once. Anything else is a ``FeatureScriptError``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import RedisError

from features.errors import FeatureScriptError, FeatureStoreUnavailable
from features.resp import ScriptReplyError

T = TypeVar("T")


async def call_functions(
    call: Callable[[], Awaitable[T]], *, reload: Callable[[], Awaitable[None]] | None = None,
    refused: Callable[[], None] = lambda: None,
) -> T:
    """``call()``'s result; with ``reload``, lost functions are loaded again and the call replayed once.
    ``refused`` runs whenever Redis refused the call."""
    for attempt in (0, 1):
        try:
            return await call()
        except ScriptReplyError as exc:
            refused()
            if exc.transient:
                raise FeatureStoreUnavailable(str(exc)) from exc
            if reload is not None and attempt == 0 and exc.noscript:
                await reload()
                continue
            raise FeatureScriptError(str(exc)) from exc
        except (RedisError, OSError) as exc:
            msg = f"redis: {exc}"
            raise FeatureStoreUnavailable(msg) from exc
    msg = "unreachable"
    raise AssertionError(msg)
