"""The one place where an exception becomes a one-line message and an exit code.

``main()`` calls ``explain`` for anything a command raises: the project's error classes (each package's
``errors.py``), unreachable services and file problems become ``error: …`` with the fix where there is one,
exit 1 (a failure; usage errors are argparse's exit 2). Anything not known here is still one line, with a
pointer to ``--debug``, which shows the traceback instead.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from config.settings import Settings

STACK_HINT = "is the stack up? run: fraudstream stack up"
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """A command cannot go on; the message says why and what to do (exit 1)."""

    exit_code = EXIT_FAILURE


class UsageError(CommandError):
    """The arguments or settings make the command impossible (exit 2), found after argument parsing."""

    exit_code = EXIT_USAGE


class ServiceUnreachable(CommandError):
    """Kafka or Redis does not answer at the configured address."""

    def __init__(self, service: str, address: str, detail: str = "") -> None:
        self.service, self.address = service, address
        more = f" ({detail})" if detail else ""
        super().__init__(f"cannot reach {service} at {address}{more} — {STACK_HINT}")

    @classmethod
    def kafka(cls, address: str, detail: str = "") -> ServiceUnreachable:
        return cls("Kafka", address, detail)

    @classmethod
    def redis(cls, address: str) -> ServiceUnreachable:
        return cls("Redis", address)


@dataclass(frozen=True)
class Explanation:
    message: str
    exit_code: int


def redis_address(url: str) -> str:
    # The URL may carry a password: show host and port only.
    rest = url.split("://", 1)[-1]
    return rest.rsplit("@", 1)[-1].split("/", 1)[0] or url


def explain(exc: BaseException, settings: Settings | None) -> Explanation | None:
    """The message and exit code for ``exc``, or None for an exception this module does not know."""
    import redis.exceptions as redis_errors
    from aiokafka import errors as kafka_errors
    from pydantic import ValidationError

    from config.errors import BadBackendUri
    from features.errors import FeatureError
    from fraudstream.stack.errors import StackError
    from fraudstream.topictools.errors import TopicToolError
    from scoring.errors import ScoringError
    from streams.errors import StreamsError
    from training.errors import TrainingError

    bootstrap = settings.kafka_bootstrap if settings else "the configured bootstrap servers"
    redis_at = redis_address(settings.redis_url) if settings else "the configured URL"
    if isinstance(exc, CommandError):
        return Explanation(str(exc), exc.exit_code)
    if isinstance(exc, kafka_errors.KafkaConnectionError | kafka_errors.NoBrokersAvailable):
        from fraudstream.cli.tlscheck import certificate_problem

        problem = certificate_problem(settings.kafka) if settings else None
        if problem is not None:
            return Explanation(problem, EXIT_FAILURE)
        return Explanation(str(ServiceUnreachable.kafka(bootstrap)), EXIT_FAILURE)
    if isinstance(exc, kafka_errors.KafkaTimeoutError):
        return Explanation(f"Kafka at {bootstrap} did not answer in time — {STACK_HINT}", EXIT_FAILURE)
    if isinstance(exc, kafka_errors.KafkaError):
        return Explanation(f"Kafka at {bootstrap}: {exc}", EXIT_FAILURE)
    if isinstance(exc, redis_errors.AuthenticationError):
        return Explanation(f"Redis at {redis_at} refused the credentials — check FRAUD_REDIS_USERNAME and "
                           "FRAUD_REDIS_PASSWORD", EXIT_FAILURE)
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError):
        return Explanation(str(ServiceUnreachable.redis(redis_at)), EXIT_FAILURE)
    if isinstance(exc, FeatureError) and exc.retryable:
        return Explanation(f"{exc} (transient: try again)", EXIT_FAILURE)
    if isinstance(exc, StackError | TrainingError | FeatureError | ScoringError | TopicToolError | StreamsError
                  | BadBackendUri):
        return Explanation(str(exc), EXIT_FAILURE)
    if isinstance(exc, ValidationError):
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        if exc.title != "Settings":
            return Explanation(f"invalid {exc.title} {where}: {first['msg']}", EXIT_USAGE)
        return Explanation(f"invalid setting {where}: {first['msg']} (FRAUD_{where.upper()} or "
                           f"{settings.stack_env_file if settings else '.fraudstream/stack.env'})", EXIT_USAGE)
    if isinstance(exc, OSError):
        return _os_error(exc)
    return None


def _os_error(exc: OSError) -> Explanation:
    name = f" {exc.filename}" if exc.filename else ""
    if exc.errno == errno.EADDRINUSE:
        return Explanation(f"the address is already in use ({exc.strerror}) — choose another --port "
                           "(0 = any free port) or stop what listens there", EXIT_FAILURE)
    if exc.errno == errno.EADDRNOTAVAIL:
        return Explanation(f"cannot listen on that --host: {exc.strerror}", EXIT_FAILURE)
    if exc.errno == errno.ECONNREFUSED:
        return Explanation(f"connection refused ({exc}) — {STACK_HINT}", EXIT_FAILURE)
    if isinstance(exc, FileNotFoundError):
        return Explanation(f"no such file or directory:{name}", EXIT_FAILURE)
    if isinstance(exc, PermissionError):
        return Explanation(f"permission denied:{name}", EXIT_FAILURE)
    return Explanation(f"{exc.strerror or exc}{(':' + name) if name else ''}", EXIT_FAILURE)
