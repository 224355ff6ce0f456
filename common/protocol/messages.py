"""Every message between the parties, as a typed model: one place for each field and its limits.

The services validate request bodies against these models and generate their API documents
(``GET /openapi.json``) from them, so a field is added by one edit here and one where it is used.
Each message names who sends it to whom; the endpoint it travels on is in the peer clients of
:mod:`common.service.clients` and in the routes of each party.

Ciphertexts travel as :data:`Ciphertexts`: base64 of fixed-width big-endian bytes. Their shape is
checked with the message; what only the job's key can tell (width n², range 0 < c < n²,
gcd(c, n) = 1, how many a round carries) is checked by :func:`ciphertexts_under` as soon as the
receiving party has looked up the job, before anything is computed on them. No document can state
those, so a failure there is a 422 (:class:`~common.protocol.errors.ProtocolViolation`), not a 400.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from common.crypto.bigint import mpz
from common.crypto.identity import IdentityKey, canonical, verify
from common.crypto.masking import JobKeyPair
from common.crypto.paillier import ALLOWED_KEY_BITS, PublicKey
from common.protocol.errors import REFUSAL_CODES, FederatedError
from common.protocol.fields import INTEGRAL, inconsistent, validation_error
from common.protocol.models import MODELS
from common.protocol.spec import (
    MAX_DATA_OWNERS,
    ColumnBounds,
    ColumnName,
    FeatureList,
    Fingerprint,
    JobId,
    JobSpec,
    ModelName,
    Protocol,
    Randomness,
    RoundKind,
)
from common.protocol.wire import MAX_VECTOR_LENGTH, decode_ciphertexts

MAX_ROUND = 1_000_000
DEREGISTER_PURPOSE = "federated_trainer/deregister/v1"
#: The most column names an owner publishes at enrolment.
MAX_PUBLISHED_COLUMNS = 10_000
MAX_ATTEMPT = 1000
MAX_REASON = 2000
MAX_PREDICTION_ROWS = 100_000
MAX_ABS_COEFFICIENT = 2.0**128
#: The most entries one page of a list (``GET /jobs``, ``GET /audit``) holds.
MAX_LISTED = 1000

_MAX_CIPHERTEXT_CHARS = 4 * -(-(2 * max(ALLOWED_KEY_BITS) // 8) // 3)

OwnerName = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$"),
    Field(description="A data owner's name: letters, digits, '.', '-' and '_', at most 64."),
]
Url = Annotated[
    str,
    StringConstraints(pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$", max_length=500),
    Field(description="An http:// or https:// URL."),
]
RoundNumber = Annotated[int, Field(strict=True, ge=0, le=MAX_ROUND, description="Rounds count from 0."), INTEGRAL]
Attempt = Annotated[
    int, Field(strict=True, ge=1, le=MAX_ATTEMPT, description="Attempts at a round count from 1."), INTEGRAL
]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=MAX_REASON)]
Ciphertext = Annotated[
    str,
    StringConstraints(
        pattern=r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$",
        min_length=4,
        max_length=_MAX_CIPHERTEXT_CHARS,
    ),
    Field(description="Base64 of a ciphertext's big-endian bytes, as wide as n²."),
]
Ciphertexts = Annotated[list[Ciphertext], Field(min_length=1, max_length=MAX_VECTOR_LENGTH)]
# A JSON number may be any size; what a float can hold is what a number field takes.
Number = Annotated[float, Field(ge=-sys.float_info.max, le=sys.float_info.max, allow_inf_nan=False)]
Coefficient = Annotated[float, Field(ge=-MAX_ABS_COEFFICIENT, le=MAX_ABS_COEFFICIENT, allow_inf_nan=False)]
PublicKeyText = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$"),
    Field(description="Base64 of a raw 32-byte Ed25519 (identity) or X25519 (job) public key."),
]
SignatureText = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9+/]{85}[AQgw]==$"),
    Field(description="Base64 of a 64-byte Ed25519 signature."),
]


def _refusal_code(code: str) -> str:
    if code not in REFUSAL_CODES:
        raise ValueError(f"unknown refusal code {code!r}")
    return code


RefusalCode = Annotated[
    str,
    Field(strict=True),
    AfterValidator(_refusal_code),
    WithJsonSchema({"type": "string", "enum": list(REFUSAL_CODES)}),
]
Token = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class Message(BaseModel):
    """Base of every message: strict types, no unknown fields, immutable once parsed."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


class Answer(BaseModel):
    """Base of every answer a party gives: documented exactly, open to later additions."""

    model_config = ConfigDict(frozen=True)


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], payload: Any, where: str = "body") -> M:
    """``payload`` as a ``model``, or the error naming its first offending field (see :mod:`.fields`)."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise validation_error(exc, where) from None


def ciphertexts_under(texts: Sequence[str], public_key: PublicKey, where: str, length: int | None) -> list[mpz]:
    """The ciphertexts of a message, each checked against the job's key (width, range, gcd)."""
    return decode_ciphertexts(list(texts), public_key, where, length)


# --- Keys -----------------------------------------------------------------------------------


class PublicKeyMessage(Message):
    """A Paillier public key: n in lower-case hexadecimal and, optionally, its fingerprint."""

    n: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{1,1024}$")]
    fingerprint: Fingerprint | None = None

    @field_validator("n")
    @classmethod
    def _a_modulus(cls, n: str) -> str:
        value = int(n, 16)
        if value.bit_length() not in ALLOWED_KEY_BITS or value % 2 == 0:
            raise inconsistent(f"an odd modulus of {', '.join(map(str, ALLOWED_KEY_BITS))} bits expected")
        return n

    @field_validator("fingerprint")
    @classmethod
    def _of_the_key(cls, fingerprint: str | None, info: ValidationInfo) -> str | None:
        n = info.data.get("n")
        if fingerprint is not None and n is not None:
            actual = PublicKey(mpz(int(n, 16))).fingerprint
            if fingerprint != actual:
                raise inconsistent(f"key fingerprint {fingerprint!r} is not the key's {actual}")
        return fingerprint

    def key(self) -> PublicKey:
        """The key (its modulus and fingerprint were checked by validation)."""
        return PublicKey(mpz(int(self.n, 16)))

    @classmethod
    def of(cls, public_key: PublicKey) -> PublicKeyMessage:
        return cls(n=format(int(public_key.n), "x"), fingerprint=public_key.fingerprint)


class JobKeys(Message):
    """A job's spec and the public key it is computed under, checked against each other."""

    spec: JobSpec
    public_key: PublicKeyMessage

    @field_validator("public_key")
    @classmethod
    def _the_spec_key(cls, public_key: PublicKeyMessage, info: ValidationInfo) -> PublicKeyMessage:
        spec = info.data.get("spec")
        if spec is not None:
            try:
                spec.check_key(public_key.key())
            except FederatedError as exc:
                raise inconsistent(exc.message) from None
        return public_key


# --- Data owner ↔ coordinator: enrolment ----------------------------------------------------


ENROL_PURPOSE = "federated_trainer/enrol/v1"
JOB_KEY_PURPOSE = "federated_trainer/job-key/v1"


class Enrolment(Message):
    """Data owner → coordinator, ``POST /data_owners`` with the enrolment secret.

    Signed with the owner's identity key: the coordinator binds the name to that key at the first
    enrolment, and lets a later enrolment under the name replace the credentials only when it is
    signed by the same key, later than the last one (PROTOCOL.md section 9).
    """

    name: OwnerName
    url: Url
    identity_key: PublicKeyText
    signed_at: Annotated[float, Field(ge=0, le=1e11, description="When the owner signed, in seconds since 1970.")]
    signature: SignatureText
    columns: Annotated[list[ColumnName], Field(max_length=MAX_PUBLISHED_COLUMNS)] = Field(
        default_factory=list,
        description="The column names the owner's policy publishes (names only): the federation's schema.",
    )

    def statement(self) -> bytes:
        """What the signature covers."""
        return canonical(
            {
                "purpose": ENROL_PURPOSE,
                "name": self.name,
                "url": self.url,
                "identity_key": self.identity_key,
                "signed_at": self.signed_at,
                "columns": list(self.columns),
            }
        )

    @classmethod
    def signed(
        cls, name: str, url: str, identity: IdentityKey, signed_at: float, columns: Sequence[str] = ()
    ) -> Enrolment:
        unsigned = cls.model_construct(
            name=name, url=url, identity_key=identity.public_text, signed_at=signed_at, columns=list(columns)
        )
        return cls(
            name=name,
            url=url,
            identity_key=identity.public_text,
            signed_at=signed_at,
            signature=identity.sign(unsigned.statement()),
            columns=list(columns),
        )

    def verify(self) -> None:
        """Raise :class:`~common.protocol.errors.Forbidden` unless the owner's key signed this."""
        verify(self.identity_key, self.statement(), self.signature, "body.signature")


class PrivacyDeclaration(Message):
    """What a data owner that protects its rows with differential privacy declares for a job.

    Everything here is public by design (PROTOCOL.md section 8): the owner's (ε, δ) for the job,
    the ρ-zCDP its release costs, and the standard deviation of the noise on each released block
    in normalised units (each column divided by the scale of its declared bounds), which the
    model creator needs to regularise the noisy statistics.
    """

    epsilon: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    delta: Annotated[float, Field(gt=0, lt=1)]
    rho: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    epsilon_at_delta: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(
        description="The ε that the release's ρ implies at δ (at most ``epsilon``, up to rounding)."
    )
    mechanism: Annotated[str, StringConstraints(max_length=200)]
    quantum_bits: Annotated[int, Field(strict=True, ge=1, le=64), INTEGRAL]
    noise_std: dict[Literal["gram", "moment", "moments"], Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(
        description="Noise standard deviation of each block, in normalised units."
    )


class MemberKey(Message):
    """A data owner's ephemeral X25519 key for one job, signed with its identity key.

    The coordinator relays the member keys of a round's member set to every member, which checks
    each signature and derives its pairwise masks from them: a key the coordinator substituted
    would not carry its owner's signature.
    """

    name: OwnerName
    identity_key: PublicKeyText
    job_key: PublicKeyText
    signature: SignatureText
    privacy: PrivacyDeclaration | SkipJsonSchema[None] = Field(
        default=None, description="The owner's differential privacy for the job, when it protects its rows."
    )

    def statement(self, job_id: str, key_fingerprint: str) -> bytes:
        """What the signature covers: the key is for this job, under this model creator key only.

        An owner's privacy declaration is covered too, so that no relay can alter what the model
        creator learns of the noise.
        """
        statement: dict[str, Any] = {
            "purpose": JOB_KEY_PURPOSE,
            "name": self.name,
            "identity_key": self.identity_key,
            "job_key": self.job_key,
            "job_id": job_id,
            "key_fingerprint": key_fingerprint,
        }
        if self.privacy is not None:
            statement["privacy"] = self.privacy.model_dump(mode="json")
        return canonical(statement)

    @classmethod
    def signed(
        cls,
        name: str,
        identity: IdentityKey,
        job_keys: JobKeyPair,
        job_id: str,
        key_fingerprint: str,
        privacy: PrivacyDeclaration | None = None,
    ) -> MemberKey:
        unsigned = cls.model_construct(
            name=name, identity_key=identity.public_text, job_key=job_keys.public_text, privacy=privacy
        )
        signature = identity.sign(unsigned.statement(job_id, key_fingerprint))
        # An owner without differential privacy leaves the field unset: its answers omit it.
        optional = {} if privacy is None else {"privacy": privacy}
        return cls(
            name=name, identity_key=identity.public_text, job_key=job_keys.public_text, signature=signature, **optional
        )

    def verify(self, job_id: str, key_fingerprint: str) -> None:
        """Raise :class:`~common.protocol.errors.Forbidden` unless ``identity_key`` signed this job key."""
        verify(self.identity_key, self.statement(job_id, key_fingerprint), self.signature, f"member {self.name}")


class Deregistration(Message):
    """Data owner → coordinator, ``POST /data_owners/<name>/deregistration``: it leaves the federation.

    Sent with the owner's credential and signed with its identity key, so that neither a stolen
    credential nor a replayed statement alone can remove an owner.
    """

    signed_at: Annotated[float, Field(ge=0, le=1e11, description="When the owner signed, in seconds since 1970.")]
    signature: SignatureText

    @staticmethod
    def statement(name: str, signed_at: float) -> bytes:
        return canonical({"purpose": DEREGISTER_PURPOSE, "name": name, "signed_at": signed_at})

    @classmethod
    def signed(cls, name: str, identity: IdentityKey, signed_at: float) -> Deregistration:
        return cls(signed_at=signed_at, signature=identity.sign(cls.statement(name, signed_at)))

    def verify(self, name: str, identity_key: str) -> None:
        """Raise :class:`~common.protocol.errors.Forbidden` unless ``identity_key`` signed this for ``name``."""
        verify(identity_key, self.statement(name, self.signed_at), self.signature, "body.signature")


class Deregistered(Answer):
    name: OwnerName
    status: Literal["removed"]


class Enrolled(Answer):
    """The coordinator's answer to an enrolment: the owner's credentials."""

    name: OwnerName
    credential: str = Field(description="The owner's own bearer token for calling the coordinator.")
    coordinator_token: str = Field(description="The token the coordinator will present to the owner.")


class DataOwnerEntry(Answer):
    name: OwnerName
    url: Url
    columns: list[str] = Field(default_factory=list, description="The column names it publishes.")
    online: bool = Field(default=True, description="False while the coordinator has it offline.")
    offline_reason: str | None = None
    offline_since: float | None = Field(
        default=None, description="When the coordinator marked it offline (seconds since 1970); None when online."
    )
    last_seen: float | None = Field(default=None, description="When it was last heard from (seconds since 1970).")


class DataOwnerList(Answer):
    """The coordinator's registry, for the model creator and the federation's operator."""

    data_owners: list[DataOwnerEntry]


# --- Model creator → coordinator: jobs and rounds -------------------------------------------


class OpenJob(JobKeys):
    """Model creator → coordinator, ``POST /jobs``: a job's spec, key and where aggregates go."""

    callback_url: Url


class JobOpened(Answer):
    job_id: JobId
    status: Literal["running"]


R = TypeVar("R", "RoundOrder", "RoundRequest")


def _not_null(cls: type, value: Any) -> Any:
    """An optional list is left out when it has no value, never sent as null."""
    if value is None:
        raise PydanticCustomError("list_type", "Input should be a valid list")
    return value


def _weights_in_gradient_rounds(order: R) -> R:
    """A gradient round carries the encrypted weights; a statistics round none."""
    if (order.kind == "gradient") != (order.encrypted_weights is not None):
        raise inconsistent(
            "encrypted_weights: expected a list of ciphertexts in a gradient round, and none in other rounds"
        )
    return order


class RoundOrder(Message):
    """Model creator → coordinator, ``POST /jobs/<id>/rounds``: run a round.

    A gradient round carries the encrypted weights, one ciphertext per coefficient; a statistics
    round carries none.
    """

    round: RoundNumber
    kind: RoundKind = "gradient"
    key_fingerprint: Fingerprint
    encrypted_weights: Ciphertexts | SkipJsonSchema[None] = None

    _no_null_weights = field_validator("encrypted_weights", mode="before")(_not_null)

    _weights_for_gradients = model_validator(mode="after")(_weights_in_gradient_rounds)


class RoundStarted(Answer):
    job_id: JobId
    round: RoundNumber
    status: Literal["started", "in progress", "resumed", "delivering again"]
    interrupted_by: str | None = Field(
        default=None,
        description="When this order resumed a round whose last run at the coordinator stopped on a"
        " transient fault there (its own storage, say): that fault. The job waits on it; it is resumed"
        " at each order until the fault ends.",
    )


class FinishJob(Message):
    """Model creator → coordinator, ``POST /jobs/<id>/finish``: the job is over."""

    status: Literal["finished", "failed"]
    error: Reason | None = None


class JobFinished(Answer):
    job_id: JobId
    status: Literal["finished", "failed"]


class AttemptRecord(Answer):
    """One attempt at a round, as the coordinator saw it: who was asked, when, how many bytes came back."""

    attempt: int = Field(ge=1, description="Attempts at a round count from 1.")
    members: list[OwnerName] = Field(
        description="The member set asked (empty when too few owners were available to ask any)."
    )
    started_at: float = Field(description="When the attempt was sent out (seconds since 1970).")
    finished_at: float = Field(description="When its replies were all in, or its time was up.")
    contribution_bytes: dict[str, int] = Field(
        description="Data owner → bytes of the contribution body it sent (members that sent none are absent)."
    )


class RoundSummary(Answer):
    """What the coordinator keeps of a round: membership, timing and sizes, never a value."""

    round: RoundNumber
    kind: RoundKind
    status: Literal["running", "aggregated", "failed"]
    attempts: int = Field(ge=0)
    contributors: list[OwnerName]
    failures: dict[str, str] = Field(description="Data owner → why it did not contribute.")
    seconds: float | None
    started_at: float | None = Field(default=None, description="When the round started (seconds since 1970).")
    finished_at: float | None = Field(
        default=None, description="When it was aggregated or failed (seconds since 1970); None while running."
    )
    members: list[OwnerName] = Field(
        default_factory=list, description="The member set asked in the round's latest attempt."
    )
    contribution_bytes: dict[str, int] = Field(
        default_factory=dict, description="Data owner → bytes of its contribution in the latest attempt."
    )
    aggregate_bytes: int | None = Field(
        default=None, description="Bytes of the aggregate message sent to the model creator; None before."
    )
    attempt_log: list[AttemptRecord] = Field(default_factory=list, description="Every attempt, oldest first.")


class JobRecord(Answer):
    """The coordinator's view of a job."""

    job_id: JobId
    status: Literal["running", "finished", "failed"]
    error: str | None
    spec: JobSpec
    rounds: list[RoundSummary]
    created_at: float | None = Field(default=None, description="When the job was opened (seconds since 1970).")
    updated_at: float | None = Field(default=None, description="When its status last changed.")


class JobSummary(Answer):
    """One job in the coordinator's list: its status, what it trains and how far it got."""

    job_id: JobId
    status: Literal["running", "finished", "failed"]
    error: str | None
    created_at: float = Field(description="When the job was opened (seconds since 1970).")
    updated_at: float = Field(description="When its status last changed.")
    model: ModelName
    features: list[str]
    label: str
    protocol: Protocol
    randomness: Randomness
    min_data_owners: int
    rounds: int = Field(ge=0, description="Rounds started so far.")
    last_round_status: Literal["running", "aggregated", "failed"] | None = Field(
        description="The status of the latest round started; None before any."
    )


class JobList(Answer):
    """``GET /jobs`` of the coordinator: the jobs, newest first."""

    jobs: list[JobSummary]


class JobListQuery(BaseModel):
    """``GET /jobs?limit=``: how many of the newest jobs to list."""

    model_config = ConfigDict(extra="forbid")

    limit: Annotated[int, Field(ge=1, le=MAX_LISTED, description=f"At most {MAX_LISTED}; default 100.")] = 100


# --- Coordinator → data owner ---------------------------------------------------------------


class JoinJob(JobKeys):
    """Coordinator → data owner, ``PUT /jobs/<id>``: take part in a job."""


class JobJoined(Answer):
    """A data owner's answer to a join: its signed job key, for the other members' masks."""

    job_id: JobId
    status: Literal["joined"]
    member: MemberKey


class RoundRequest(Message):
    """Coordinator → data owner, ``POST /jobs/<id>/rounds``: reply to one attempt at a round."""

    round: RoundNumber
    attempt: Attempt
    kind: RoundKind = "gradient"
    key_fingerprint: Fingerprint
    encrypted_weights: Ciphertexts | SkipJsonSchema[None] = None
    members: Annotated[
        list[MemberKey],
        Field(
            min_length=1,
            max_length=MAX_DATA_OWNERS,
            description="The attempt's member set: every owner asked, with its signed job key.",
        ),
    ]

    _no_null_weights = field_validator("encrypted_weights", mode="before")(_not_null)

    _weights_for_gradients = model_validator(mode="after")(_weights_in_gradient_rounds)


class RoundAccepted(Answer):
    job_id: JobId
    round: RoundNumber
    status: Literal["accepted"]


class JobLeft(Answer):
    job_id: JobId
    status: Literal["left"]


# --- Data owner → coordinator: replies ------------------------------------------------------


class Contribution(Message):
    """Data owner → coordinator, ``POST /jobs/<id>/rounds/<r>/contributions``: its packed reply."""

    data_owner: OwnerName
    attempt: Attempt
    key_fingerprint: Fingerprint
    ciphertexts: Ciphertexts


class Refusal(Message):
    """Data owner → coordinator, ``POST /jobs/<id>/rounds/<r>/refusals``: it will not reply."""

    data_owner: OwnerName
    attempt: Attempt
    code: RefusalCode
    column: ColumnName | SkipJsonSchema[None] = None


class Accepted(Answer):
    status: Literal["accepted"]


# --- Coordinator → model creator ------------------------------------------------------------


class Aggregate(Message):
    """Coordinator → model creator, ``POST /jobs/<id>/aggregates``: a round's encrypted sums."""

    round: RoundNumber
    kind: RoundKind
    key_fingerprint: Fingerprint
    ciphertexts: Ciphertexts
    contributors: Annotated[list[OwnerName], Field(max_length=MAX_DATA_OWNERS)]
    # Keyed by owner names: the keys' pattern is the one ``patternProperties`` states, and no other.
    failures: dict[OwnerName, Annotated[str, StringConstraints(max_length=4 * MAX_REASON)]] = Field(
        default_factory=dict, json_schema_extra={"additionalProperties": False}
    )
    privacy: dict[OwnerName, PrivacyDeclaration] = Field(
        default_factory=dict,
        json_schema_extra={"additionalProperties": False},
        description="The privacy declaration of each contributor that protects its rows with DP.",
    )


class JobFailure(Message):
    """Coordinator → model creator, ``POST /jobs/<id>/failure``: the job cannot go on."""

    error: Annotated[str, StringConstraints(min_length=1, max_length=8 * MAX_REASON)]


# --- A data owner's own status, for its operator ---------------------------------------------


class TrustedKey(Answer):
    fingerprint: Fingerprint
    source: str = Field(description="'pinned by the operator' or 'trusted on first use'.")
    since: float | None = None


class OwnerEvent(Answer):
    """A join, refusal or contribution, with the details that only the owner's operator sees."""

    at: float
    job_id: str
    round: int | None
    outcome: Literal["joined", "refused", "contributed"]
    code: str | None
    column: str | None
    detail: str | None


class ServedSet(Answer):
    key_fingerprint: Fingerprint
    members: list[str]
    job_id: str
    round: int
    served_at: float


class PrivacyCharge(Answer):
    """One job's charge to a data owner's privacy budget."""

    job_id: str
    key_fingerprint: str = Field(description="The model creator key the job was under.")
    epsilon: float
    delta: float
    rho: float = Field(description="The zCDP cost of the job's release; costs add up across jobs.")
    charged_at: float


class PrivacyLedger(Answer):
    """A data owner's privacy budget: what a job costs, every charge, what is spent and left.

    Costs compose in zero-concentrated DP (ρ adds up); ε is the (ε, δ) conversion at δ.
    """

    epsilon_per_job: float
    delta: float
    budget_epsilon: float
    rho_per_job: float
    budget_rho: float
    spent_rho: float
    spent_epsilon: float = Field(description="The ε that all charges together cost, at δ.")
    remaining_epsilon: float
    jobs_remaining: int = Field(description="How many more jobs the budget admits.")
    charges: list[PrivacyCharge]


class OwnerStatus(Answer):
    """``GET /status`` of a data owner: its policy, the key it trusts, what it joined and refused."""

    name: OwnerName
    identity_key: str = Field(description="The owner's Ed25519 identity key (public), base64.")
    policy: dict[str, Any]
    warnings: list[str]
    trusted_key: TrustedKey | None
    jobs: list[str] = Field(description="The jobs joined now.")
    events: list[OwnerEvent] = Field(description="The latest events, newest first.")
    served_sets: list[ServedSet] = Field(description="Every member set this owner contributed to.")
    privacy: PrivacyLedger | None = Field(
        default=None, description="The privacy budget ledger, when the owner protects its rows with DP."
    )


AuditDirection = Literal["sent", "answered"]


class AuditEntry(Answer):
    """One message that left a data owner: its own request to a party, or its answer to one.

    ``sha256`` and ``size`` are those of the exact body bytes, which ``GET /audit/<id>`` returns.
    """

    id: int = Field(ge=1, description="Increasing with time; ``before`` pages by it.")
    at: float = Field(description="When it was recorded, just before it left (seconds since 1970).")
    direction: AuditDirection = Field(
        description="'sent': a request this owner made; 'answered': its answer to a request it received."
    )
    peer: str = Field(description="To whom: the URL called, or for an answer the party that called.")
    method: str
    path: str = Field(description="The path of the request (this owner's own for an answer).")
    kind: str = Field(
        description="What it is: enrolment, deregistration, contribution, refusal, join, round_acceptance,"
        " leave, error (an answer refusing a request for another reason) or other."
    )
    status: int | None = Field(
        description="The HTTP status of the answer (None: a request that got no answer, or not yet)."
    )
    size: int = Field(ge=0, description="Bytes of the body.")
    sha256: str = Field(description="SHA-256 of the body's exact bytes, hex.")


class AuditList(Answer):
    """``GET /audit`` of a data owner: the messages that left it, newest first."""

    entries: list[AuditEntry]
    next_before: int | None = Field(
        description="Pass as ``before`` for the next (older) page; None when this page is the last."
    )


class AuditQuery(BaseModel):
    """``GET /audit?limit=&before=``: a page of the audit, newest first."""

    model_config = ConfigDict(extra="forbid")

    limit: Annotated[int, Field(ge=1, le=MAX_LISTED, description=f"At most {MAX_LISTED}; default 100.")] = 100
    before: Annotated[int | None, Field(ge=1, description="Only entries with a smaller id (older).")] = None


# --- Every service --------------------------------------------------------------------------


class ErrorBody(Answer):
    """Every error a service answers with."""

    error: str = Field(description="What was wrong, naming the field, job or round.")
    type: str = Field(description="The error's class, e.g. SchemaError, NotFound, Conflict.")


class Health(Answer):
    status: Literal["ok"]


# --- The model creator's user API -----------------------------------------------------------


PENALISED_MODELS: list[JsonValue] = [name for name, kind in MODELS.items() if kind.penalised]


class TrainingOptions(Message):
    """A user's ``POST /model`` body; every field is optional, defaults come from the settings.

    ``alpha`` is for the penalised models only (the default model has no penalty), as the schema
    says; :class:`~model_creator.training.TrainingRequest` refuses it otherwise.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "if": {"required": ["alpha"]},
            "then": {"required": ["model"], "properties": {"model": {"enum": PENALISED_MODELS}}},
        }
    )

    model: ModelName = "linear_regression"
    features: FeatureList | SkipJsonSchema[None] = None
    label: ColumnName | SkipJsonSchema[None] = None
    optimizer: Literal["exact", "gd", "momentum", "adam"] = "exact"
    learning_rate: Annotated[float, Field(ge=1e-12, le=1e6)] = 0.1
    max_rounds: Annotated[int, Field(strict=True, ge=1, le=100_000), INTEGRAL] | SkipJsonSchema[None] = None
    min_data_owners: Annotated[int, Field(strict=True, ge=1, le=MAX_DATA_OWNERS), INTEGRAL] = 1
    max_abs_weight: Annotated[float, Field(ge=1.0, le=2.0**128)] | SkipJsonSchema[None] = None
    alpha: Annotated[float, Field(ge=0.0, le=1e12)] | SkipJsonSchema[None] = None
    standardize: bool | SkipJsonSchema[None] = None
    tolerance: Annotated[float, Field(ge=0.0, le=1e6)] = 1e-8
    relative_tolerance: Annotated[float, Field(ge=0.0, le=1.0)] = 1e-12
    bounds: ColumnBounds | SkipJsonSchema[None] = None
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | SkipJsonSchema[None] = None
    protocol: Protocol = Field("gradients", description="'one_shot': the owners' statistics once, solved exactly.")
    randomness: Randomness = Field("standard", description="'djn': short-exponent randomness (another assumption).")

    @model_validator(mode="before")
    @classmethod
    def _empty_body(cls, payload: Any) -> Any:
        return {} if payload is None else payload

    @field_validator(
        "features", "label", "max_rounds", "max_abs_weight", "alpha", "standardize", "bounds", "name", mode="before"
    )
    @classmethod
    def _given_means_a_value(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("null is not a value; leave the field out for its default")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainingOptions:
        if self.features is not None and "intercept" in self.features:
            raise inconsistent("features: 'intercept' is reserved for the intercept coefficient")
        if self.label is not None and self.features is not None and self.label in self.features:
            raise inconsistent(f"label {self.label!r} is also listed as a feature")
        for column, (low, high) in (self.bounds or {}).items():
            if not low < high:
                raise inconsistent(f"bounds: {column!r}: the low bound {low:g} is not below the high bound {high:g}")
        if self.protocol == "one_shot" and self.optimizer != "exact":
            raise inconsistent("protocol: 'one_shot' is solved exactly; it takes no other optimizer than 'exact'")
        return self


class TrainingStarted(Answer):
    model_id: JobId
    status: Literal["pending"]
    warnings: list[str] = Field(
        default_factory=list, description="What the job will do without: owners that lack one of its columns."
    )


class FederationMember(Answer):
    """A data owner as the model creator's user sees the federation."""

    name: OwnerName
    columns: list[str] = Field(description="The column names it publishes (names only).")
    online: bool = Field(description="False while the coordinator has it offline (left out of rounds).")
    offline_reason: str | None = Field(default=None, description="Why the coordinator has it offline, while it does.")
    last_seen: float | None = Field(description="When the coordinator last heard from it (seconds since 1970).")


class Federation(Answer):
    """``GET /federation`` on the model creator: the owners registered with the coordinator."""

    data_owners: list[FederationMember]


class ModelCancelling(Answer):
    model_id: JobId
    status: Literal["cancelling"]


class ModelDeleted(Answer):
    model_id: JobId
    status: Literal["deleted"]


class RoundHistory(Answer):
    """What the model creator's history keeps of a round: nothing about any single owner's values."""

    round: int
    kind: RoundKind
    contributors: int
    data_owners: list[str]
    failures: dict[str, str]
    gradient_norm: float | None
    validation: dict[str, float | None] | None
    restarted: bool
    seconds: float
    stop_reason: str | None = None


class Scaling(Answer):
    means: dict[str, float]
    stds: dict[str, float]


class JobInterruption(Answer):
    """Why a job in flight makes no progress: a transient fault that it waits out, retried until it works.

    A storage fault (here or at the coordinator) or a coordinator that cannot be reached never
    fails a job: the job waits and resumes from its last saved round once the fault ends. This
    says so while it waits, for as long as the fault lasts, and is gone once the job moves on.
    """

    reason: str = Field(description="What failed, as the party that failed said it (the latest fault).")
    since: float = Field(description="Unix time of the first fault of this interruption.")
    attempts: int = Field(ge=1, description="Faults met since then: the first one, then each try to resume.")
    retry_every: float = Field(description="Seconds between two tries to resume the job.")
    note: str = Field(description="What happens next, and what the user can do about it.")


class ModelRecord(Answer):
    """A model as the model creator stores it; a finished one carries its coefficients."""

    model_id: JobId
    version: int
    status: Literal["pending", "running", "finished", "failed", "cancelled"]
    name: str | None = Field(default=None, description="The name the request gave the model, if any.")
    model: str
    features: list[str]
    label: str
    optimizer: str
    request: dict[str, Any]
    round: int
    expected_rounds: int | None = Field(
        default=None, description="Rounds the job is expected to take: d + 1 for the exact solver, else max_rounds."
    )
    fraction_done: float | None = Field(default=None, description="round / expected_rounds (1 once finished).")
    seconds_left: float | None = Field(
        default=None, description="Estimated seconds until the job finishes: mean round time × rounds left."
    )
    created_at: float
    updated_at: float
    error: str | None = None
    coefficients: dict[str, float] | None = None
    stop_reason: str | None = None
    data_owners: list[str] | None = None
    metrics: dict[str, float | None] | None = None
    metrics_note: str | None = Field(default=None, description="Why a finished model has no metrics.")
    imported_from: str | None = None
    scaling: Scaling | None = None
    standardized_coefficients: dict[str, float] | None = None
    privacy: dict[str, Any] | None = Field(
        default=None,
        description="Per data owner, the (ε, δ) it trained under, and how the noisy statistics were solved.",
    )
    history: list[RoundHistory] | None = None
    interrupted: JobInterruption | None = Field(
        default=None,
        description="Set while a job in flight waits out a transient fault (what failed, since when);"
        " absent once it moves on.",
    )


class ModelList(Answer):
    models: list[ModelRecord]


class ImportedTraining(Message):
    """The ``training`` part of an exported model: provenance, kept as it was."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True, allow_inf_nan=False)

    request: dict[str, Any] = Field(default_factory=dict)
    stop_reason: str | None = None
    data_owners: list[str] = Field(default_factory=list)
    metrics: dict[str, Number | None] | None = None


class ExportedModel(Message):
    """A finished model as self-contained JSON (``GET /model/<id>/export``, ``POST /models/import``)."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True, allow_inf_nan=False)

    format: Literal["federated_trainer.model/1"]
    model_id: str | None = None
    model: ModelName
    features: FeatureList
    label: ColumnName
    coefficients: dict[str, Coefficient]
    training: ImportedTraining = Field(default_factory=ImportedTraining)
    scaling: dict[str, dict[str, Number]] | None = None
    standardized_coefficients: dict[str, Number] | None = None

    @model_validator(mode="after")
    def _one_per_feature(self) -> ExportedModel:
        if "intercept" in self.features:
            raise inconsistent("features: 'intercept' is reserved for the intercept coefficient")
        names = ["intercept", *self.features]
        if set(self.coefficients) != set(names):
            raise inconsistent(f"coefficients: expected a number for each of {', '.join(names)}")
        return self


class ModelImported(Answer):
    model_id: JobId
    status: Literal["finished"]


class PredictionRows(Message):
    """``POST /prediction`` as JSON: rows of feature → value, one value for each of the model's features."""

    model_id: JobId | None = None
    rows: Annotated[list[dict[ColumnName, Number]], Field(min_length=1, max_length=MAX_PREDICTION_ROWS)]


class Prediction(Answer):
    """Predictions of a model, with its metrics when the rows carried labels."""

    model_config = ConfigDict(frozen=True, extra="allow")

    model_id: str
    model: str
    rows: int
    predictions: list[float]
    labels: list[float] | None = None
