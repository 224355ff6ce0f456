"""The coordinator's round policy: who takes part, quorum, retries, failures and aggregation.

Plain Python, free of HTTP, threads and storage, the way Flower's ``Strategy`` is apart from its
server loop: :class:`~coordinator.runner.RoundRunner` asks the member set this policy names,
gathers their replies as ``(replies, failures)`` and lets :meth:`RoundPolicy.decide` say what they
mean.

Membership is fixed per attempt (PROTOCOL.md section 9): the owners' masks cancel only in the sum
over the whole member set announced to them, so an attempt is aggregated only when every member
replied, and an attempt that lost a member is tried again without it, on a new member set.

The coordinator never decrypts. Aggregation multiplies the owners' packed ciphertexts slot-wise
(ciphertext i of every owner together), which adds their plaintexts: the gradient sum, the row
count sum and the contributor count, all still encrypted under the model creator's key.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from common.crypto.bigint import mpz
from common.protocol.errors import FederatedError, ProtocolViolation, UpstreamError, is_transient
from common.protocol.spec import JobSpec


@dataclass(frozen=True)
class Accept:
    """Every member of the attempt replied: their replies are aggregated.

    ``contributors`` is the attempt's whole member set; ``failures`` are the owners that were not
    members (they refused the job, could not join, or failed an earlier attempt) and why.
    """

    contributors: tuple[str, ...]
    failures: dict[str, str]


@dataclass(frozen=True)
class Retry:
    """The attempt cannot be aggregated, with attempts left: the round is tried again.

    ``left_out`` are the members that failed this attempt (and why): the next attempts of this
    run of the round do without them, so they go out on another member set, with fresh masks.
    """

    reason: str
    left_out: dict[str, str]


@dataclass(frozen=True)
class Fail:
    """No attempt could be aggregated and none is left: the round, and with it the job, fails."""

    reason: str
    failures: dict[str, str]


Decision = Accept | Retry | Fail


@dataclass(frozen=True)
class RoundPolicy:
    """What the coordinator does with one round of one job.

    Each data owner masks its reply with pairwise masks that cancel only in the sum over the whole
    member set the attempt announced (PROTOCOL.md section 9). So an attempt is aggregated only
    when every member replied: a sum over fewer would decrypt to noise at the model creator, and
    forwarding it would only tell the model creator who was missing. A member that fails ends the
    attempt; the next attempt leaves it out.

    Parameters
    ----------
    min_data_owners
        The quorum: the fewest members an attempt may have for its round to be aggregated.
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
        """The owners an attempt wants to take part: every registered owner but those that refused the job."""
        return sorted(name for name in registered if name not in refused)

    def member_set(
        self,
        participants: Collection[str],
        joined: Collection[str],
        left_out: Collection[str],
        offline: Collection[str] = (),
    ) -> list[str]:
        """An attempt's member set, by name: the participants that joined the job and were not left out.

        Owners ``offline`` (they missed an earlier deadline and have not answered health since)
        are left out too while the others meet the quorum: a silent owner must not hold up every
        round. Without them the quorum is not met, so they are asked after all.

        Every member is sent the same member list, and each derives its masks from it.
        """
        candidates = sorted(name for name in participants if name in joined and name not in left_out)
        online = [name for name in candidates if name not in offline]
        return online if self.quorate(online) else candidates

    def quorate(self, members: Collection[str]) -> bool:
        """Whether a member set is large enough to be asked at all."""
        return len(members) >= max(self.min_data_owners, 1)

    def decide(
        self,
        round_number: int,
        attempt: int,
        registered: Collection[str],
        members: Collection[str],
        replies: Collection[str],
        failures: Mapping[str, str],
        rejoining: Collection[str] = (),
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
        members
            The attempt's member set (:meth:`member_set`); empty when it was not asked, being too small.
        replies
            The members whose reply arrived and passed every check.
        failures
            Owner → why it did not reply: the members that failed or did not answer in time, and
            the owners that were not members (refused the job, could not join, left out).
        rejoining
            Members that failed because they forgot the job (a restart): they are joined again
            and take part in the next attempt with their new job key, rather than being left out.

        Returns
        -------
        Decision
            :class:`Accept` when every member replied and there are at least ``min_data_owners``
            of them; otherwise :class:`Retry` while attempts remain, else :class:`Fail`.
        """
        member_set = set(members)
        if not self.quorate(member_set):
            # Too few members to be worth asking: nobody was asked, so nobody failed the attempt.
            shortfall = f"{len(member_set)} member(s), fewer than the {self.min_data_owners} required"
            replied: set[str] = set()
            remaining = {name: reason for name, reason in failures.items() if name not in member_set}
            remaining.update({name: "not asked: too few members" for name in member_set})
            left_out: dict[str, str] = {}
        else:
            replied = member_set & set(replies)
            if replied == member_set:
                outside = {name: reason for name, reason in failures.items() if name not in member_set}
                return Accept(tuple(sorted(member_set)), outside)
            shortfall = f"{len(replied)} of {len(member_set)} member(s) replied, and every member's reply is needed"
            remaining = {name: reason for name, reason in failures.items() if name not in replied}
            for name in member_set - replied:
                remaining.setdefault(name, "no reply")
            left_out = {name: remaining[name] for name in sorted(member_set - replied) if name not in rejoining}
        summary = describe(registered, replied, remaining)
        if attempt < self.attempts:
            return Retry(f"attempt {attempt}: {shortfall}; {summary}", left_out)
        return Fail(
            f"round {round_number}: not aggregated in {attempt} attempt(s); last attempt: {shortfall}; {summary}",
            remaining,
        )


def refusal_reason(code: str, column: str | None) -> str:
    """How an owner's refusal of a round is recorded: its code and the job column, nothing else.

    PROTOCOL.md section 7: a refusal travels as a fixed code and the column concerned; the owner
    keeps the details (file, row, value) to itself.
    """
    return f"refused: {code}" if column is None else f"refused: {code} (column '{column}')"


def refuses_job(error: FederatedError) -> bool:
    """Whether an owner's error answer to joining a job means it will not take part in it.

    An error the owner answered with (its data cannot serve the job, the spec is not one it
    accepts, ...) is a refusal, and the owner is not asked again for the job. An owner that could
    not be reached, failed in a way it does not name, or could not use its storage for now (a
    503), may still take part in a later attempt.
    """
    return error.peer is not None and not isinstance(error, UpstreamError) and not is_transient(error)


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
