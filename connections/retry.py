"""When a message is tried again: one policy, built from tenacity's strategies.

Only transient failures are retried (4xx replies, dropped connections, timeouts; RFC 5321
§4.2.1: a 5xx means "do not repeat the exact request"), at most the connection's
``max_attempts`` in all, with exponential backoff and full jitter between
``retry_initial_s`` and ``retry_max_s``.

Why tenacity's strategies and not its ``AsyncRetrying`` loop: a message's first attempt runs
with no retry machinery at all (most messages succeed at once, and one call through
``AsyncRetrying`` costs about 0.1 ms, measured with tenacity 9.2, against about 0.7 ms for a
whole message in the benchmark); its failure then starts a :class:`~tenacity.RetryCallState`
that the policy's strategies read exactly as tenacity's loop would, attempt 1 included, so
nothing is replayed.
"""

from __future__ import annotations

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_random_exponential

from .errors import SmtpError
from .model import SmtpConnection

__all__ = ["RetryPolicy", "retried"]


def retried(exc: BaseException) -> bool:
    """Whether a failure is worth another attempt: a transient :class:`SmtpError`."""
    return isinstance(exc, SmtpError) and exc.transient


class RetryPolicy:
    """One connection's retry policy (see the module docstring); built once, shared by every message."""

    __slots__ = ("max_attempts", "tenacity")

    def __init__(self, connection: SmtpConnection) -> None:
        self.max_attempts = connection.max_attempts
        # The policy itself; its loop is never run (see the module docstring), its strategies are.
        self.tenacity = AsyncRetrying(
            retry=retry_if_exception(retried),
            stop=stop_after_attempt(connection.max_attempts),
            wait=wait_random_exponential(multiplier=connection.retry_initial_s, max=connection.retry_max_s))

    def failed(self, exc: BaseException, state: RetryCallState | None) -> RetryCallState:
        """Record ``exc`` as the outcome of a message's next attempt: ``state`` is ``None`` after
        its first (a new state), else the state of its earlier failures."""
        if state is None:
            state = RetryCallState(self.tenacity, None, (), {})
        else:
            state.prepare_for_next_attempt()
        state.set_exception((type(exc), exc, exc.__traceback__))
        return state

    def backoff_s(self, state: RetryCallState) -> float | None:
        """Seconds to wait before the next attempt after the failure in ``state``; ``None`` when
        there is none (not retried, or the attempts are used up): the failure stands."""
        policy = self.tenacity
        if not policy.retry(state) or policy.stop(state):
            return None
        return float(policy.wait(state))
