"""The coordinator's round policy: who takes part, quorum, retries, failures and aggregation.

Plain Python, free of HTTP, threads and storage, the way Flower's ``Strategy`` is apart from its
server loop: :class:`~coordinator.runner.RoundRunner` asks the owners this policy names, gathers
their replies as ``(replies, failures)`` and lets :meth:`RoundPolicy.decide` say what they mean.

The coordinator never decrypts. Aggregation multiplies the owners' packed ciphertexts slot-wise
(ciphertext i of every owner together), which adds their plaintexts: the gradient sum, the row
count sum and the contributor count, all still encrypted under the model creator's key.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from common.crypto.bigint import mpz
from common.protocol.errors import FederatedError, ProtocolViolation, UpstreamError
from common.protocol.spec import JobSpec


@dataclass(frozen=True)
class Accept:
    """The quorum is met: the replies of ``contributors`` are aggregated."""

    contributors: tuple[str, ...]
    failures: dict[str, str]


@dataclass(frozen=True)
class Retry:
    """Too few replies, with attempts left: the round is tried again after the retry delay."""

    reason: str


@dataclass(frozen=True)
class Fail:
    """Too few replies and no attempt left: the round, and with it the job, fails."""

    reason: str
    failures: dict[str, str]


Decision = Accept | Retry | Fail


@dataclass(frozen=True)
class RoundPolicy:
    """What the coordinator does with one round of one job.

    Parameters
    ----------
    min_data_owners
        The quorum: replies an attempt needs for its round to be aggregated.
    attempts
        Attempts at a round in one run of it (the first and each retry).
    """

    min_data_owners: int
    attempts: int

    @classmethod
    def for_job(cls, spec: JobSpec, retries: int) -> RoundPolicy:
        """The policy of ``spec``'s rounds: its quorum, and ``retries`` attempts after the first."""
        return cls(spec.min_data_owners, retries + 1)

    def participants(self, registered: Collection[str], refused: Mapping[str, str]) -> list[str]:
        """The owners an attempt asks: every registered owner but those that refused the job."""
        return sorted(name for name in registered if name not in refused)

    def decide(
        self,
        round_number: int,
        attempt: int,
        registered: Collection[str],
        replies: Collection[str],
        failures: Mapping[str, str],
    ) -> Decision:
        """What the replies of the ``attempt``-th attempt of this run mean for the round.

        Parameters
        ----------
        round_number
            The round, to name it in a reason.
        attempt
            Attempts made in this run so far, this one included (from 1).
        registered
            The owners registered when the attempt started.
        replies
            The owners whose reply arrived and passed every check.
        failures
            Owner → why it did not reply: those that refused the job (and were not asked), and
            those asked that failed or did not answer in time.
        """
        remaining = {name: reason for name, reason in failures.items() if name not in replies}
        if len(replies) >= self.min_data_owners:
            return Accept(tuple(sorted(replies)), remaining)
        summary = describe(registered, replies, remaining)
        if attempt < self.attempts:
            return Retry(f"attempt {attempt}: {len(replies)} of {self.min_data_owners} required replies; {summary}")
        return Fail(
            f"round {round_number}: fewer than {self.min_data_owners} data owner(s) answered in"
            f" {attempt} attempt(s); {summary}",
            remaining,
        )


def refuses_job(error: FederatedError) -> bool:
    """Whether an owner's error answer to joining a job means it will not take part in it.

    An error the owner answered with (its data cannot serve the job, the spec is not one it
    accepts, ...) is a refusal, and the owner is not asked again for the job. An owner that could
    not be reached, or failed in a way it does not name, may still take part in a later attempt.
    """
    return error.peer is not None and not isinstance(error, UpstreamError)


def describe(registered: Collection[str], replies: Collection[str], failures: Mapping[str, str]) -> str:
    """Why an attempt fell short: each owner's failure and who did reply, or that nobody is registered."""
    if not registered:
        return "no data owner is registered with the coordinator"
    parts = [f"{name}: {reason}" for name, reason in sorted(failures.items())]
    if replies:
        parts.append(f"replied: {', '.join(sorted(replies))}")
    return "; ".join(parts)


def aggregate(nsquare: mpz, replies: Sequence[Sequence[mpz]]) -> list[mpz]:
    """Slot-wise product of the replies' ciphertexts modulo n²: E(Σ values).

    Raises
    ------
    ProtocolViolation
        When there is no reply, or the replies differ in length.
    """
    if not replies:
        raise ProtocolViolation("no reply to aggregate")
    width = len(replies[0])
    if any(len(reply) != width for reply in replies):
        raise ProtocolViolation("replies of one round differ in length")
    result = []
    for index in range(width):
        product = mpz(1)
        for reply in replies:
            product = product * reply[index] % nsquare
        result.append(product)
    return result
