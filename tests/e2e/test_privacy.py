"""What the coordinator handles: ciphertexts under the model creator's key and metadata, nothing else.

One federation of three generated owners runs every path a round can take (PROTOCOL.md sections
5, 7 and 9): an exact linear job, a standardised job (statistics round first), a job one owner
refuses for a missing column, a logistic job one owner refuses for a non-binary label, a job in
which an owner is killed mid-round and restarted (attempts fail, are retried on a smaller member
set, and the restarted owner rejoins with a new job key) and whose last rounds one owner refuses
by policy, and a job during which the coordinator itself is restarted.

Everything the coordinator handled is then collected: its traffic log (every body it received,
answered, sent and got back), every row of every table of its SQLite database, its own answers
(``GET /jobs/<id>``) and its process log. That corpus is searched for every plaintext the
coordinator must never see (PROTOCOL.md section 1) — every value of every owner's CSV, every row
count and every sum of row counts, each owner's and every member set's XᵀX / Xᵀy and feature
sums, every weight queried, every gradient (per owner and summed) and every coefficient — in
every encoding: decimal text, JSON numbers, the fixed-point integers of the job's scales (with
and without the slot bias, and as residues mod n) in decimal, in hexadecimal and as big-endian
bytes inside every base64 string. Every search is first shown to find a secret planted in a copy
of the corpus, so a search that silently finds nothing fails.

The ciphertexts are checked with the model creator's key (read from its state directory): every
one is well formed; no two distinct ones share their randomness; an identical one appears only
as a message relayed; no single owner's contribution, and no product of an incomplete attempt's
contributions, unpacks as a sum (the pairwise masks, section 9), while every aggregate does and
equals the sum numpy computes from the CSVs.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import itertools
import json
import math
import re
import sqlite3
import stat
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gmpy2
import numpy as np
import pytest
from e2e_support import (
    ALL_COLUMNS,
    RAW_FEATURES,
    RAW_LABEL,
    STD_FEATURES,
    STD_LABEL,
    coordinator_job,
    design,
    generate_rows,
    load,
    numbers_in_csv,
    post_model,
    read_table,
    restart_owner_while_the_job_waits,
    running_federation,
    traffic_records,
    wait_coordinator_job,
    write_csv,
)

from common.crypto.packing import SlotLayout, pack_plain, unpack_sum
from common.crypto.paillier import PrivateKey
from common.dataset import load_columns
from common.protocol.errors import REFUSAL_CODES, DataError, FederatedError
from common.protocol.models import MODELS
from common.protocol.spec import STATISTICS, JobSpec
from common.protocol.statistics import feature_sums
from common.service.audit import REDACTED
from data_owner.affine import EncryptedAffineMap

pytestmark = pytest.mark.e2e

# Three-digit row counts, all different, none below SMALL_INTEGER_LIMIT, so that every one of
# them and every sum of them is searched for as text as well as in every encoding.
OWNER_SIZES = (157, 243, 389)
# Names without digits: an owner's name is metadata the coordinator sees, and must not carry a number.
OWNER_NAMES = ("amber", "birch", "cedar")
# birch has no ``unused_score`` column (it refuses the job that reads it: missing_column); cedar's
# ``subscribed`` column holds one 2 (it refuses the logistic job on it: not_binary) and cedar's
# operator allows at most CEDAR_MAX_ROUNDS rounds per job (it refuses later rounds: policy:max_rounds).
# The dropout job's killed owner must be back before then, or the attempt after cedar's refusal has
# one member (amber), whose reply is then unmasked: the rounds go on at full speed without it, far
# faster than it restarts, so the job waits for it (its model creator stopped) at round 5.
MISSING_COLUMN_OWNER = "birch"
NOT_BINARY_OWNER = "cedar"
CEDAR_MAX_ROUNDS = 25
# Rounds of the dropout job: past cedar's limit, and enough for the killed owner's restart (a new
# process: a second or two, while a round takes tens of milliseconds) to end well before the job.
DROPOUT_ROUNDS = 120
DROPOUT_OWNER = "birch"
BINARY_LABEL = "subscribed"
# Columns no job reads: their names are the owners' schema, which must never leave them (section 7).
UNREAD_COLUMNS = ("listing_id", "agent")

ROUND_TIMEOUT = 5
RETRY_DELAY = 0.2
ROUND_ATTEMPTS = 3  # the coordinator's default: a first attempt and 2 retries

JOBS: dict[str, dict[str, Any]] = {
    "exact": {"features": RAW_FEATURES, "label": RAW_LABEL},
    "standardised": {"features": RAW_FEATURES, "label": RAW_LABEL, "optimizer": "gd", "learning_rate": 0.5,
                     "max_rounds": 3, "standardize": True},
    "missing_column": {"features": ["z1", "unused_score"], "label": STD_LABEL, "optimizer": "gd", "max_rounds": 2},
    "not_binary": {"model": "logistic_regression", "features": STD_FEATURES, "label": BINARY_LABEL,
                   "optimizer": "gd", "max_rounds": 2},
    "dropout": {"features": STD_FEATURES, "label": STD_LABEL, "optimizer": "gd", "learning_rate": 0.5,
                "max_rounds": DROPOUT_ROUNDS},
    "coordinator_restart": {"features": STD_FEATURES, "label": STD_LABEL, "optimizer": "gd", "learning_rate": 0.5,
                            "max_rounds": 8},
}

# --------------------------------------------------------------------------------------------
# What is metadata, and why. Everything else is searched.
# --------------------------------------------------------------------------------------------

#: JSON keys and SQL columns whose numbers are protocol metadata, not data. Each is checked to be
#: what it claims by test_metadata_numbers_are_what_they_claim, so no row count can hide there.
METADATA_NUMBER_KEYS = {
    "round": "a round number (counts from 0; at most the job's max_rounds)",
    "attempt": "an attempt number (counts from 1; at most the coordinator's attempts per run)",
    "attempts": "attempts made at a round",
    "data_frac_bits": "the job's fixed-point scale, set by the model creator's settings",
    "weight_frac_bits": "the job's fixed-point scale, set by the model creator's settings",
    "weight_bits": "the job's weight bound, from the request's max_abs_weight",
    "value_bits": "the slot layout, from the model creator's declared bounds",
    "count_bits": "the slot layout, from the model creator's maximum of owners",
    "slots_per_ciphertext": "the slot layout, from the key size",
    "min_data_owners": "the job's quorum, as requested",
    "label_scale": "the job's power of two for the label, from declared bounds (0: none declared)",
    "feature_scales": "the job's powers of two for the features, from declared bounds (none declared here)",
    "signed_at": "a wall-clock time (the owner's enrolment signature)",
    "registered_at": "a wall-clock time (the coordinator's clock)",
    "created_at": "a wall-clock time (the coordinator's clock)",
    "updated_at": "a wall-clock time (the coordinator's clock)",
    "started_at": "a wall-clock time (the coordinator's clock)",
    "last_seen": "a wall-clock time (the coordinator's clock: when it last heard from an owner)",
    "finished_at": "a wall-clock time (the coordinator's clock)",
    "seconds": "a duration measured by the coordinator",
    "aggregate_bytes": "the size of an aggregate the coordinator sent the model creator (in its traffic log)",
    "contribution_bytes": "the size of a contribution the coordinator received (in its traffic log)",
    "delivered": "a flag (0 or 1)",
    "port": "the TCP port of a party, from its enrolment or the federation's configuration",
}
TIME_KEYS = {"signed_at", "registered_at", "created_at", "updated_at", "started_at", "finished_at", "last_seen"}
#: Mappings of owner name → number: their numbers stand under the mapping's key (the names are keys).
PER_OWNER_NUMBER_KEYS = {"contribution_bytes"}

#: Strings that are keys, signatures, digests, random ids, tokens or ciphertexts: their digits are
#: not numbers, so they are not searched as decimal text; they are searched as hexadecimal and as
#: base64 bytes like every other string.
OPAQUE_KEYS = {"encrypted_weights", "ciphertexts", "weights", "n", "fingerprint", "key_fingerprint",
               "identity_key", "job_key", "signature", "job_id", "credential_digest", "coordinator_token",
               "credential"}
CIPHERTEXT_KEYS = {"encrypted_weights", "ciphertexts", "weights"}

#: In free text (error messages, failure reasons, log lines) an integer below this is not
#: attributable: the coordinator's own reason texts carry attempt numbers, member counts, retry
#: counters and timeouts, all below it. No row count or sum of row counts is below it (asserted),
#: and every small data value is still searched in its fixed-point encodings and as JSON numbers.
SMALL_INTEGER_LIMIT = 100
#: Numbers in free text whose position makes them transport metadata: an HTTP status a peer
#: answered with, an operating-system error number, a party's port.
METADATA_TEXT = re.compile(r"HTTP \d{3}\b|\[Errno \d+\]|port=\d+")
#: The prefix the logging module gives each line of the coordinator's process log (its clock).
LOG_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
URL = re.compile(r"https?://[^\s'\"(),;]+(?<![:.])")
# A decimal number standing on its own: not inside a word, an identifier, a dotted address or a longer number.
DECIMAL_TOKEN = re.compile(r"(?<![0-9A-Za-z.])[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?![0-9A-Za-z]|\.\d)")
# Runs that look random (base64 or hexadecimal, 16 characters or more, digits and letters mixed):
# searched as bytes and as hexadecimal, not as decimal text.
RANDOM_LOOKING = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
BASE64_CANDIDATE = re.compile(r"[A-Za-z0-9+/]{6,}={0,2}")
BASE64URL_CANDIDATE = re.compile(r"[A-Za-z0-9_-]{6,}={0,2}")
HEX_RUN = re.compile(r"[0-9a-fA-F]{2,}")
#: What an opaque value is made of: base64, base64url, hexadecimal or decimal digits, nothing else.
ENCODED_VALUE = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")
STANDALONE_HEX = re.compile(r"(?<![0-9A-Za-z])(?:0[xX])?([0-9a-fA-F]+)(?![0-9A-Za-z])")
# A field name that would stand for a row count.
ROW_WORDS = re.compile(r"row|sample|record|observation|^n_i$|^n$|size|count", re.IGNORECASE)
ROW_WORD_KEYS_ALLOWED = {"n": "the public key's modulus (hex)", "slots_per_ciphertext": "the slot layout",
                         "count_bits": "the slot layout"}
# How rare a chance match must be for a substring search of random-looking text to call a hit a finding.
CHANCE_BUDGET = 1e-6
MIN_BYTES = 4


# --------------------------------------------------------------------------------------------
# Paillier, independently of the product's code
# --------------------------------------------------------------------------------------------

class Decryptor:
    """Textbook Paillier decryption with g = n + 1: m = L(c^λ mod n²) · λ⁻¹ mod n."""

    def __init__(self, key: PrivateKey) -> None:
        p, q = gmpy2.mpz(int(key.p)), gmpy2.mpz(int(key.q))
        self.n = p * q
        self.nsquare = self.n * self.n
        self.lam = gmpy2.lcm(p - 1, q - 1)
        self.mu = gmpy2.invert(self.lam, self.n)

    def __call__(self, c: int) -> int:
        u = gmpy2.powmod(gmpy2.mpz(c), self.lam, self.nsquare)
        return int((u - 1) // self.n * self.mu % self.n)

    def signed(self, c: int) -> int:
        m = self(c)
        return m if m < self.n // 2 else m - int(self.n)


def ciphertext_int(text: str) -> int:
    return int.from_bytes(base64.b64decode(text, validate=True), "big")


def unpacks(plaintexts: Sequence[int], spec: dict[str, Any], kind: str) -> tuple[int, list[int]] | None:
    """The product's ``unpack_sum`` of decrypted packed plaintexts, or None when it raises."""
    layout = SlotLayout.model_validate(spec["layout"])
    try:
        return unpack_sum(plaintexts, layout, job_spec(spec).reply_values(kind), "privacy test")
    except FederatedError:
        return None


def job_spec(spec: dict[str, Any]) -> JobSpec:
    return JobSpec.model_validate(spec)


# --------------------------------------------------------------------------------------------
# The scenario
# --------------------------------------------------------------------------------------------

@dataclass
class Run:
    """One federation's whole history, as the coordinator handled it."""

    owners: dict[str, Path]
    sizes: dict[str, int]
    models: dict[str, dict[str, Any]]
    job_ids: dict[str, str]
    records: list[dict[str, Any]]
    tables: dict[str, list[dict[str, Any]]]
    job_views: dict[str, dict[str, Any]]
    log_lines: list[str]
    key: PrivateKey
    key_path: Path
    ports: dict[str, int]
    urls: dict[str, str]
    started: float
    ended: float
    workdir: Path


def write_owners(directory: Path) -> dict[str, Path]:
    """The three owners' CSVs: generated rows, each owner its own column order and quirks."""
    rng = np.random.default_rng(4242)
    directory.mkdir(parents=True, exist_ok=True)
    owners = {}
    for index, (name, size) in enumerate(zip(OWNER_NAMES, OWNER_SIZES, strict=True)):
        rows = generate_rows(rng, size, shift=index)
        rows[BINARY_LABEL] = (rng.random(size) < 0.4).astype(np.float64)
        columns = [*ALL_COLUMNS, BINARY_LABEL]
        if name == MISSING_COLUMN_OWNER:
            columns.remove("unused_score")
            columns.reverse()
        if name == NOT_BINARY_OWNER:
            rows[BINARY_LABEL][size // 2] = 2.0
            columns = columns[4:] + columns[:4]
        owners[name] = write_csv(directory / f"{name}.csv", columns, rows)
    return owners


def write_test_data(directory: Path) -> Path:
    """The model creator's own test rows: every column a job reads (it checks jobs against them)."""
    rng = np.random.default_rng(99)
    rows = generate_rows(rng, 200, shift=1.0)
    rows[BINARY_LABEL] = (rng.random(200) < 0.4).astype(np.float64)
    columns = [name for name in ALL_COLUMNS if name not in UNREAD_COLUMNS] + [BINARY_LABEL]
    return write_csv(directory / "test.csv", columns, rows)


def _start(federation, body: dict[str, Any]) -> str:
    response = federation.session.post(f"{federation.model_creator.url}/model", json=body, timeout=30)
    assert response.status_code == 202, response.text
    return response.json()["model_id"]


def _wait_for_round(federation, model_id: str, round_number: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = federation.session.get(f"{federation.model_creator.url}/model/{model_id}", timeout=10).json()
        assert model["status"] in ("pending", "running"), model.get("error")
        if model["round"] >= round_number:
            return
        time.sleep(0.02)
    raise TimeoutError(f"model {model_id} did not reach round {round_number}")


def dump_tables(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table of a SQLite database, read-only."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    connection.row_factory = sqlite3.Row
    try:
        names = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {name: [dict(row) for row in connection.execute(f'SELECT * FROM "{name}"')] for name in names}
    finally:
        connection.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Iterator[Run]:
    directory = tmp_path_factory.mktemp("privacy")
    owners = write_owners(directory / "data")
    test_csv = write_test_data(directory / "data")
    workdir = directory / "federation"
    cedar_state = workdir / f"data_owner_{NOT_BINARY_OWNER}"
    cedar_state.mkdir(parents=True)
    (cedar_state / "policy.json").write_text(json.dumps({"max_rounds": CEDAR_MAX_ROUNDS}))
    log = directory / "coordinator_traffic.jsonl"
    environment = {"FT_COORDINATOR_ROUND_TIMEOUT": str(ROUND_TIMEOUT), "FT_COORDINATOR_RETRY_DELAY": str(RETRY_DELAY)}
    started = time.time()
    # Every owner publishes the columns its jobs read and no other (--allow-columns): the columns it
    # keeps to itself must then appear nowhere the coordinator looks, its registry included.
    published = sorted({column for job in JOBS.values() for column in [*job["features"], job["label"]]})
    with running_federation(workdir, list(owners.items()), test_csv, coordinator_traffic_log=log,
                            environment=environment, owner_options=["--allow-columns", ",".join(published)]
                            ) as federation:
        models = {}
        for label in ("exact", "standardised", "missing_column", "not_binary"):
            models[label] = post_model(federation, JOBS[label])

        # An owner killed in the middle of a round and started again a few rounds later.
        model_id = _start(federation, JOBS["dropout"])
        _wait_for_round(federation, model_id, 2)
        dropped = federation.data_owner(DROPOUT_OWNER)
        dropped.process.kill()
        dropped.process.wait(10)
        _wait_for_round(federation, model_id, 5)
        restart_owner_while_the_job_waits(federation, DROPOUT_OWNER)
        models["dropout"] = federation.wait_model(model_id, 120)

        # The coordinator restarted in the middle of a job.
        model_id = _start(federation, JOBS["coordinator_restart"])
        _wait_for_round(federation, model_id, 3)
        federation.restart(federation.coordinator, down_seconds=1.0)
        models["coordinator_restart"] = federation.wait_model(model_id, 120)

        for label, model in models.items():
            assert model["status"] == "finished", f"{label}: {model.get('error')}"
        job_ids = {label: model["model_id"] for label, model in models.items()}
        for job_id in job_ids.values():
            wait_coordinator_job(federation, job_id)
        job_views = {job_id: coordinator_job(federation, job_id) for job_id in job_ids.values()}
        time.sleep(0.5)  # the coordinator releases finished jobs at the owners in its worker
        ended = time.time()
        records = traffic_records(log)
        tables = dump_tables(workdir / "coordinator" / "coordinator.sqlite3")
        log_lines = (workdir / "coordinator.log").read_text(encoding="utf-8", errors="replace").splitlines()
        key_path = workdir / "model_creator" / "paillier_private_key.json"
        ports = {name: party.port for name, party in federation.parties.items()}
        urls = {name: party.url for name, party in federation.parties.items()}
        yield Run(
            owners=owners, sizes={name: len(read_table(path)[1]) for name, path in owners.items()},
            models=models, job_ids=job_ids, records=records, tables=tables, job_views=job_views,
            log_lines=log_lines, key=PrivateKey.from_json(json.loads(key_path.read_text())), key_path=key_path,
            ports=ports, urls=urls, started=started, ended=ended, workdir=workdir,
        )


# --------------------------------------------------------------------------------------------
# The corpus: everything the coordinator handled, as leaves with a location and a key
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Leaf:
    """One scalar the coordinator handled: where it was, the key (JSON key, SQL column, role) it was under."""

    where: str
    key: str | None
    value: Any
    source: str


def json_leaves(node: Any, where: str, key: str | None, source: str) -> Iterator[Leaf]:
    """Every scalar of a JSON document; dict keys are leaves too; strings holding JSON are opened."""
    if isinstance(node, dict):
        for name, value in node.items():
            yield Leaf(f"{where} (key)", "<key>", name, source)
            yield from json_leaves(value, f"{where}.{name}", key if key in PER_OWNER_NUMBER_KEYS else name, source)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from json_leaves(value, f"{where}[{index}]", key, source)
    elif isinstance(node, str) and node[:1] in "{[" and node[-1:] in "}]":
        try:
            document = json.loads(node)
        except ValueError:
            yield from text_leaves(node, where, key, source)
        else:
            yield from json_leaves(document, where, key, source)
    elif isinstance(node, str) and key not in OPAQUE_KEYS:
        yield from text_leaves(node, where, key, source)
    else:
        yield Leaf(where, key, node, source)


def text_leaves(text: str, where: str, key: str | None, source: str) -> Iterator[Leaf]:
    """Free text: URLs in it become URL leaves (their ports and round numbers are metadata)."""
    for match in URL.finditer(text):
        yield from url_leaves(match.group(), f"{where} (URL)", source)
    yield Leaf(where, key, URL.sub(" ", text), source)


def url_leaves(url: str, where: str, source: str) -> Iterator[Leaf]:
    parts = urlsplit(url)
    if parts.hostname:
        yield Leaf(f"{where} host", "host", parts.hostname, source)
    if parts.port is not None:
        yield Leaf(f"{where} port", "port", parts.port, source)
    segments = [segment for segment in parts.path.split("/") if segment]
    for index, segment in enumerate(segments):
        previous = segments[index - 1] if index else None
        if previous == "jobs":
            yield Leaf(f"{where} path", "job_id", segment, source)
        elif previous == "rounds" and segment.isdigit():
            yield Leaf(f"{where} path", "round", int(segment), source)
        else:
            yield Leaf(f"{where} path", "path", segment, source)
    if parts.query:
        yield Leaf(f"{where} query", "query", parts.query, source)


def traffic_leaves(records: list[dict[str, Any]]) -> Iterator[Leaf]:
    for index, record in enumerate(records):
        where = f"traffic log line {index + 1} ({record['direction']} {record['peer']})"
        yield Leaf(f"{where} direction", "direction", record["direction"], "traffic")
        yield from url_leaves(record["peer"], f"{where} peer", "traffic")
        body = record["body"]
        if not body.strip():
            continue
        try:
            document = json.loads(body)
        except ValueError:
            yield from text_leaves(body, f"{where} body", "body", "traffic")
        else:
            yield from json_leaves(document, f"{where} body", None, "traffic")


def table_leaves(tables: dict[str, list[dict[str, Any]]]) -> Iterator[Leaf]:
    for table, rows in tables.items():
        for index, row in enumerate(rows):
            for column, value in row.items():
                yield from json_leaves(value, f"coordinator.sqlite3 {table} row {index + 1} column {column}",
                                       column, "database")


def view_leaves(views: dict[str, dict[str, Any]]) -> Iterator[Leaf]:
    for job_id, view in views.items():
        yield from json_leaves(view, f"GET /jobs/{job_id} answer", None, "job view")


def log_leaves(lines: list[str]) -> Iterator[Leaf]:
    for index, line in enumerate(lines):
        yield from text_leaves(LOG_TIME.sub("", line), f"coordinator.log line {index + 1}", "log", "process log")


@pytest.fixture(scope="module")
def corpus(run) -> list[Leaf]:
    leaves = [*traffic_leaves(run.records), *table_leaves(run.tables), *view_leaves(run.job_views),
              *log_leaves(run.log_lines)]
    assert {leaf.source for leaf in leaves} == {"traffic", "database", "job view", "process log"}
    return leaves


# --------------------------------------------------------------------------------------------
# The protocol as the traffic log shows it
# --------------------------------------------------------------------------------------------

@dataclass
class Attempt:
    job: str
    round: int
    attempt: int
    kind: str
    members: tuple[str, ...]
    member_keys: dict[str, str]
    weights: tuple[str, ...] | None
    contributions: dict[str, list[str]] = field(default_factory=dict)
    # A contribution the coordinator answered with 409: it arrived after the attempt had closed.
    late: bool = False


@dataclass
class Protocol:
    specs: dict[str, dict[str, Any]]
    owner_of_url: dict[str, str]
    kinds: dict[tuple[str, int], str]
    orders: dict[tuple[str, int], list[tuple[str, ...] | None]]
    attempts: dict[tuple[str, int, int], Attempt]
    aggregates: dict[tuple[str, int], list[dict[str, Any]]]
    owner_errors: list[tuple[str, str, str, dict[str, Any]]]
    refusal_bodies: list[tuple[str, str, dict[str, Any]]]
    occurrences: dict[str, list[tuple[str, tuple]]]
    weights: dict[tuple[str, int], list[int]]
    n: int
    aggregated: dict[tuple[str, int], Attempt | None]

    def is_aggregated(self, attempt: Attempt) -> bool:
        """Whether the coordinator's aggregate for the attempt's round is the product of its contributions."""
        return self.aggregated.get((attempt.job, attempt.round)) is attempt


def path_parts(peer: str) -> list[str]:
    return [segment for segment in urlsplit(peer).path.split("/") if segment]


@pytest.fixture(scope="module")
def protocol(run) -> Protocol:
    """Jobs, rounds, attempts, contributions and aggregates, read from the traffic log alone."""
    decrypt = Decryptor(run.key)
    specs: dict[str, dict[str, Any]] = {}
    owner_of_url: dict[str, str] = {}
    kinds: dict[tuple[str, int], str] = {}
    orders: dict[tuple[str, int], list[tuple[str, ...] | None]] = defaultdict(list)
    attempts: dict[tuple[str, int, int], Attempt] = {}
    aggregates: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    owner_errors: list[tuple[str, str, str, dict[str, Any]]] = []
    refusal_bodies: list[tuple[str, str, dict[str, Any]]] = []
    occurrences: dict[str, list[tuple[str, tuple]]] = defaultdict(list)

    for index, record in enumerate(run.records):
        where = f"traffic log line {index + 1}"
        body = json.loads(record["body"]) if record["body"].strip() else None
        direction, parts = record["direction"], path_parts(record["peer"])
        base = record["peer"].split("/jobs")[0] if record["peer"].startswith("http") else None
        if direction == "received" and parts == ["data_owners"] and body:
            owner_of_url[body["url"].rstrip("/")] = body["name"]
        elif direction == "received" and parts == ["jobs"]:
            specs[body["spec"]["job_id"]] = body["spec"]
        elif direction == "received" and len(parts) == 3 and parts[2] == "rounds":
            job, number = parts[1], body["round"]
            kinds[(job, number)] = body["kind"]
            weights = tuple(body["encrypted_weights"]) if "encrypted_weights" in body else None
            orders[(job, number)].append(weights)
            for position, text in enumerate(weights or ()):
                occurrences[text].append((f"{where} order", ("weight", job, number, position)))
        elif direction == "sent" and len(parts) == 3 and parts[2] == "rounds" and base in owner_of_url:
            job, owner = parts[1], owner_of_url[base]
            key = (job, body["round"], body["attempt"])
            members = tuple(member["name"] for member in body["members"])
            weights = tuple(body["encrypted_weights"]) if "encrypted_weights" in body else None
            attempt = attempts.setdefault(key, Attempt(job, body["round"], body["attempt"], body["kind"], members,
                                                       {m["name"]: m["job_key"] for m in body["members"]}, weights))
            assert attempt.members == members and attempt.weights == weights, f"{where}: members differ within {key}"
            for position, text in enumerate(weights or ()):
                occurrences[text].append((f"{where} request to {owner}", ("weight", job, body["round"], position)))
        elif direction == "received" and len(parts) == 5 and parts[4] == "contributions":
            job, number = parts[1], int(parts[3])
            key = (job, number, body["attempt"])
            assert key in attempts, f"{where}: a contribution to an attempt never sent out"
            assert body["data_owner"] not in attempts[key].contributions, f"{where}: a second contribution"
            attempts[key].contributions[body["data_owner"]] = body["ciphertexts"]
            for position, text in enumerate(body["ciphertexts"]):
                role = ("contribution", *key, body["data_owner"], position)
                occurrences[text].append((f"{where} contribution", role))
        elif direction == "answered" and len(parts) == 5 and parts[4] == "contributions" and body \
                and body.get("type") == "Conflict" and (late := re.search(r"attempt (\d+) is not open", body["error"])):
            late_key = (parts[1], int(parts[3]), int(late.group(1)))
            assert late_key in attempts, f"{where}: a late contribution to an attempt never sent out"
            attempts[late_key].late = True
        elif direction == "received" and len(parts) == 5 and parts[4] == "refusals":
            refusal_bodies.append((where, parts[1], body))
        elif direction == "sent" and len(parts) == 3 and parts[2] == "aggregates":
            job = parts[1]
            aggregates[(job, body["round"])].append(body)
            for position, text in enumerate(body["ciphertexts"]):
                occurrences[text].append((f"{where} aggregate", ("aggregate", job, body["round"], position)))
        elif direction == "reply" and base in owner_of_url and isinstance(body, dict) and "error" in body:
            owner_errors.append((where, owner_of_url[base], parts[1], body))
        # Any other ciphertext field is an occurrence of unknown role.
        elif isinstance(body, dict):
            for leaf in json_leaves(body, where, None, "traffic"):
                if leaf.key in CIPHERTEXT_KEYS:
                    occurrences[leaf.value].append((leaf.where, ("unexpected",)))

    for table, rows in run.tables.items():
        for index, row in enumerate(rows):
            where = f"coordinator.sqlite3 {table} row {index + 1}"
            if table == "rounds":
                for position, text in enumerate(json.loads(row["weights"] or "null") or ()):
                    occurrences[text].append((f"{where} weights", ("weight", row["job_id"], row["round"], position)))
                if row["aggregate"]:
                    stored = json.loads(row["aggregate"])
                    for position, text in enumerate(stored["ciphertexts"]):
                        occurrences[text].append(
                            (f"{where} aggregate", ("aggregate", row["job_id"], row["round"], position)))
                continue
            for leaf in json_leaves(row, where, None, "database"):
                if leaf.key in CIPHERTEXT_KEYS:
                    occurrences[leaf.value].append((leaf.where, ("unexpected",)))
    for job_id, view in run.job_views.items():
        for leaf in json_leaves(view, f"GET /jobs/{job_id}", None, "job view"):
            if leaf.key in CIPHERTEXT_KEYS:
                occurrences[leaf.value].append((leaf.where, ("unexpected",)))

    weights: dict[tuple[str, int], list[int]] = {}
    for (job, number), ordered in orders.items():
        if ordered[0] is not None:
            weights[(job, number)] = [decrypt.signed(ciphertext_int(text)) for text in ordered[0]]
    n = int(run.key.public_key.n)
    return Protocol(specs, owner_of_url, kinds, dict(orders), attempts, dict(aggregates), owner_errors,
                    refusal_bodies, dict(occurrences), weights, n, aggregated_attempts(attempts, aggregates, n))


def aggregated_attempts(attempts: dict[tuple[str, int, int], Attempt], aggregates: dict[tuple[str, int], list],
                        n: int) -> dict[tuple[str, int], Attempt | None]:
    """(job, round) → the attempt whose contributions multiply to the round's aggregate, if one does."""
    nsquare = n * n
    found: dict[tuple[str, int], Attempt | None] = {}
    for (job, number), sent in aggregates.items():
        target = [ciphertext_int(text) for text in sent[0]["ciphertexts"]]
        found[(job, number)] = None
        for attempt in attempts.values():
            if (attempt.job, attempt.round) != (job, number) or not attempt.contributions:
                continue
            product = [1] * len(target)
            for texts in attempt.contributions.values():
                product = [p * ciphertext_int(t) % nsquare for p, t in zip(product, texts, strict=True)]
            if product == target:
                assert found[(job, number)] is None, f"two attempts of job {job} round {number} give its aggregate"
                found[(job, number)] = attempt
    return found


# --------------------------------------------------------------------------------------------
# What each owner holds, exactly as it encodes it, and the numpy reference
# --------------------------------------------------------------------------------------------

@dataclass
class OwnerJob:
    """One owner's statistics for one job: exact fixed-point integers and numpy floats."""

    rows: int
    matrix: list[list[int]]
    offset: list[int]
    sums: list[int]
    gram: np.ndarray
    moment: np.ndarray
    feature_sum: np.ndarray
    feature_square_sum: np.ndarray


def numpy_statistics(model: str, path: Path, features: Sequence[str], label: str) -> tuple[np.ndarray, np.ndarray]:
    """A_i and b_i of section 4 from the CSV with numpy alone."""
    x, y = load(path, features, label)
    d = design(x)
    if model == "logistic_regression":
        return d.T @ d / 4, d.T @ (y - 0.5)
    return d.T @ d, d.T @ y


@pytest.fixture(scope="module")
def holdings(run, protocol) -> dict[tuple[str, str], OwnerJob]:
    """(job, owner) → what the owner computes for the job, for every owner whose data can serve it."""
    held = {}
    for job_id, spec_json in protocol.specs.items():
        spec = job_spec(spec_json)
        for owner, path in run.owners.items():
            try:
                features, labels = load_columns(path, spec.features, spec.label)
                if MODELS[spec.model].binary_labels and not np.all((labels == 0) | (labels == 1)):
                    continue
            except DataError:
                continue
            affine = EncryptedAffineMap.prepare(spec, features, labels, str(path))
            gram, moment = numpy_statistics(spec.model, path, spec.features, spec.label)
            x, _ = load(path, spec.features, spec.label)
            held[(job_id, owner)] = OwnerJob(
                rows=affine.row_count, matrix=[list(row) for row in affine.matrix], offset=list(affine.offset),
                sums=feature_sums(features, spec, str(path)), gram=gram, moment=moment,
                feature_sum=x.sum(axis=0), feature_square_sum=(x**2).sum(axis=0),
            )
    return held


def exact_reply(held: OwnerJob, kind: str, weights: Sequence[int] | None) -> list[int]:
    """The signed values an owner packs: its row count, then A_i·w − b_i (or its feature sums)."""
    if kind == STATISTICS:
        return list(held.sums)
    assert weights is not None
    gradient = [sum(a * w for a, w in zip(row, weights, strict=True)) - b
                for row, b in zip(held.matrix, held.offset, strict=True)]
    return [held.rows, *gradient]


def owners_of_job(holdings: dict[tuple[str, str], OwnerJob], job: str) -> list[str]:
    return sorted(owner for j, owner in holdings if j == job)


def member_subsets(names: Sequence[str]) -> Iterator[tuple[str, ...]]:
    """Every set of at least two of ``names``: the sums the coordinator must not see either."""
    for size in range(2, len(names) + 1):
        yield from itertools.combinations(sorted(names), size)


# --------------------------------------------------------------------------------------------
# Secrets: every plaintext the coordinator must not see, in every encoding
# --------------------------------------------------------------------------------------------

class Secrets:
    """Decimal text forms, float values and encoded integers, each mapped to what it is."""

    def __init__(self, n: int, scales: Sequence[int], bias_bits: int, max_contributors: int) -> None:
        self.n = n
        self.scales = sorted(set(scales))
        self.bias = 1 << bias_bits
        self.max_contributors = max_contributors
        self.texts: dict[str, str] = {}
        self.reals: dict[float, str] = {}
        self.integers: dict[int, str] = {}

    def add_real(self, value: float | Fraction | int, what: str, written: str | None = None) -> None:
        """A real secret: its text forms, its value, and its fixed-point integers at every job scale."""
        if written is not None:
            self.texts.setdefault(written.lstrip("+-"), what)
        if isinstance(value, (int, np.integer)):
            value = int(value)
            self.add_integer(value, what)
        as_float = float(value)
        if not math.isfinite(as_float):
            return
        self.reals.setdefault(as_float, what)
        self.reals.setdefault(-as_float, what)
        for form in text_forms(value):
            self.texts.setdefault(form, what)
        if as_float.is_integer() and abs(as_float) < 2**53:
            self.integers.setdefault(abs(int(as_float)), what)
        for scale in self.scales:
            if isinstance(value, float):
                encoded = round(math.ldexp(value, scale))
            else:
                encoded = round(Fraction(value) * (1 << scale))
            self.add_encoded(encoded, f"{what} at 2^{scale}")

    def add_integer(self, value: int, what: str) -> None:
        """An integer secret (a row count, an encoded statistic): itself and its encoded forms."""
        self.integers.setdefault(abs(value), what)
        self.texts.setdefault(str(abs(value)), what)
        self.add_encoded(value, what)

    def add_encoded(self, encoded: int, what: str) -> None:
        """A fixed-point integer as it could sit in a slot or a plaintext: signed, |x|, x mod n, biased."""
        if abs(encoded) < SMALL_INTEGER_LIMIT:
            return
        self.integers.setdefault(abs(encoded), what)
        self.integers.setdefault(encoded % self.n, f"{what} (mod n)")
        for contributors in range(1, self.max_contributors + 1):
            self.integers.setdefault(encoded + contributors * self.bias, f"{what} (slot, bias ×{contributors})")


def text_forms(value: float | Fraction | int) -> set[str]:
    """The ways a number is likely written: repr, str, %g at 6..17 digits, rounded to 0..6 decimals.

    A rounded form that keeps fewer than 3 significant digits (``0.01`` for 0.0123) says almost
    nothing of the value and is left out; every exact form is kept, however short.
    """
    as_float = float(value)
    forms = {repr(as_float), str(as_float), *(f"{as_float:.{digits}g}" for digits in range(6, 18))}
    if as_float.is_integer():
        forms.add(str(int(as_float)))
    if isinstance(value, Fraction) and value.denominator & (value.denominator - 1) == 0:
        with localcontext() as context:
            context.prec = 400
            exact = Decimal(value.numerator) / Decimal(value.denominator)
        forms.add(format(exact, "f"))
    for decimals in range(0, 7):
        rounded = f"{as_float:.{decimals}f}"
        if significant_digits(rounded) >= 3:
            forms.add(rounded)
    return {form.lstrip("+-") for form in forms if form not in ("inf", "-inf", "nan")}


def significant_digits(text: str) -> int:
    mantissa = re.split("[eE]", text)[0].lstrip("+-")
    return len(mantissa.replace(".", "").lstrip("0"))


@pytest.fixture(scope="module")
def secrets(run, protocol, holdings) -> Secrets:
    n = int(run.key.public_key.n)
    specs = list(protocol.specs.values())
    scales = {s for spec in specs for s in (spec["data_frac_bits"], spec["weight_frac_bits"],
                                             spec["data_frac_bits"] + spec["weight_frac_bits"])}
    (value_bits,) = {spec["layout"]["value_bits"] for spec in specs}
    found = Secrets(n, sorted(scales), value_bits, len(run.owners))

    # Every value of every owner's CSV, as written and as a number.
    for owner, path in run.owners.items():
        texts, values = numbers_in_csv(path)
        assert len(values) > 1000
        for text, value in zip(texts, values, strict=True):
            found.add_real(value, f"a value of {owner}'s CSV", written=text)
    # Every row count, and every sum of row counts.
    for owner, rows in run.sizes.items():
        found.add_integer(rows, f"{owner}'s row count")
    for subset in member_subsets(list(run.sizes)):
        found.add_integer(sum(run.sizes[o] for o in subset), f"the row count of {'+'.join(subset)}")

    for job_id, spec in protocol.specs.items():
        layout = SlotLayout.model_validate(spec["layout"])
        names = owners_of_job(holdings, job_id)
        # Each owner's statistics, exact and as numpy computes them, and those of every member set.
        for subset in [(name,) for name in names] + list(member_subsets(names)):
            label = "+".join(subset)
            held = [holdings[(job_id, name)] for name in subset]
            for value in sum(h.gram for h in held).ravel():
                found.add_real(float(value), f"XᵀX of {label} in job {job_id}")
            for value in sum(h.moment for h in held):
                found.add_real(float(value), f"Xᵀy of {label} in job {job_id}")
            for value in [*sum(h.feature_sum for h in held), *sum(h.feature_square_sum for h in held)]:
                found.add_real(float(value), f"feature sums of {label} in job {job_id}")
            for row in zip(*[[v for r in h.matrix for v in r] for h in held], strict=True):
                found.add_integer(sum(row), f"encoded XᵀX of {label} in job {job_id}")
            for entry in zip(*[h.offset for h in held], strict=True):
                found.add_integer(sum(entry), f"encoded Xᵀy of {label} in job {job_id}")
            for entry in zip(*[h.sums[1:] for h in held], strict=True):
                found.add_integer(sum(entry), f"encoded feature sums of {label} in job {job_id}")
                found.add_real(Fraction(sum(entry), 1 << spec["data_frac_bits"]),
                               f"feature sums of {label} in job {job_id}")
            statistics_values = [sum(column) for column in zip(*[h.sums for h in held], strict=True)]
            for plaintext in pack_plain(statistics_values, layout):
                found.add_integer(plaintext, f"the packed feature sums of {label} in job {job_id}")
        # Every weight queried, and every gradient at it: per owner and per member set.
        for (job, number), point in protocol.weights.items():
            if job != job_id:
                continue
            for w in point:
                found.add_integer(w, f"an encoded weight of job {job} round {number}")
                found.add_real(Fraction(w, 1 << spec["weight_frac_bits"]), f"a weight of job {job} round {number}")
            replies = {name: exact_reply(holdings[(job, name)], "gradient", point) for name in names}
            for subset in [(name,) for name in names] + list(member_subsets(names)):
                label = "+".join(subset)
                summed = [sum(column) for column in zip(*[replies[name] for name in subset], strict=True)]
                frac = spec["data_frac_bits"] + spec["weight_frac_bits"]
                for value in summed[1:]:
                    found.add_integer(value, f"the encoded gradient of {label} in job {job} round {number}")
                    found.add_real(Fraction(value, 1 << frac), f"the gradient of {label} in job {job} round {number}")
                    found.add_real(Fraction(value, (1 << frac) * summed[0]),
                                   f"the mean gradient of {label} in job {job} round {number}")
                for plaintext in pack_plain(summed, layout):
                    found.add_integer(plaintext, f"the packed reply of {label} in job {job} round {number}")
    # What the model creator made of it all.
    for label, model in run.models.items():
        for name in ("coefficients", "standardized_coefficients", "scaling", "metrics"):
            for leaf in json_leaves(model.get(name), name, None, "model"):
                if isinstance(leaf.value, float):
                    found.add_real(leaf.value, f"{leaf.where} of the {label} model")
        for entry in model["history"]:
            for leaf in json_leaves({k: entry.get(k) for k in ("gradient_norm", "validation")}, "history", None, "m"):
                if isinstance(leaf.value, float):
                    found.add_real(leaf.value, f"{leaf.where} of the {label} model")
    assert min([*run.sizes.values()]) >= SMALL_INTEGER_LIMIT
    return found


# --------------------------------------------------------------------------------------------
# The searches. Each returns its findings, naming where each was; each is tested on a plant.
# --------------------------------------------------------------------------------------------

def decimal_tokens(text: str, ports: set[int]) -> Iterator[str]:
    """The decimal numbers standing on their own in free text, metadata positions left out."""
    text = METADATA_TEXT.sub(" ", text)
    text = RANDOM_LOOKING.sub(lambda m: " " if re.search(r"\d", m.group()) and re.search("[A-Za-z]", m.group())
                              else m.group(), text)
    for token in DECIMAL_TOKEN.findall(text):
        bare = token.lstrip("+-")
        try:
            value = float(bare)
        except ValueError:
            continue
        if value.is_integer() and (abs(value) < SMALL_INTEGER_LIMIT or int(value) in ports):
            continue
        yield bare


def search_decimal_text(leaves: Iterable[Leaf], secrets: Secrets, ports: set[int]) -> list[str]:
    findings = []
    for leaf in leaves:
        if not isinstance(leaf.value, str) or leaf.key in OPAQUE_KEYS:
            continue
        for token in decimal_tokens(leaf.value, ports):
            what = secrets.texts.get(token)
            if what is None:
                value = float(token)
                if re.fullmatch(r"\d+", token):
                    what = secrets.integers.get(int(token))
                what = what or secrets.reals.get(value)
            if what is not None:
                findings.append(f"{leaf.where}: {token!r} is {what}")
    return findings


def search_json_numbers(leaves: Iterable[Leaf], secrets: Secrets) -> list[str]:
    """Every number outside the metadata keys: any is a finding, named when it is a known secret."""
    findings = []
    for leaf in leaves:
        if isinstance(leaf.value, bool) or not isinstance(leaf.value, (int, float)):
            continue
        if leaf.key in METADATA_NUMBER_KEYS:
            continue
        what = secrets.integers.get(abs(leaf.value)) if isinstance(leaf.value, int) else None
        what = what or secrets.reals.get(float(leaf.value))
        findings.append(f"{leaf.where} ({leaf.key}) = {leaf.value!r}: "
                        + (f"is {what}" if what else "a number outside the protocol's metadata"))
    return findings


def threshold(counts: Counter[int], corpus_size: int, alphabet: int) -> int:
    """The shortest length from which a substring search's expected chance matches stay under CHANCE_BUDGET."""
    lengths = sorted(counts)
    for length in lengths:
        expected = sum(counts[k] * corpus_size * float(alphabet) ** -k for k in lengths if k >= length)
        if expected < CHANCE_BUDGET:
            return length
    return (lengths[-1] + 1) if lengths else 1


def search_hexadecimal(leaves: Iterable[Leaf], secrets: Secrets) -> tuple[list[str], int]:
    """Encoded integers of ≥ 4 bytes written in hexadecimal.

    as a whole standalone token (any case, optional 0x, leading zeros), or inside any hexadecimal
    run when long enough that chance cannot explain it. Returns the findings and that length (in hex
    digits).
    """
    tokens: dict[str, str] = {}
    runs: dict[str, str] = {}
    for leaf in leaves:
        if not isinstance(leaf.value, str):
            continue
        for match in STANDALONE_HEX.finditer(leaf.value):
            tokens.setdefault(match.group(1).lower().lstrip("0"), leaf.where)
        for match in HEX_RUN.finditer(leaf.value):
            runs.setdefault(match.group().lower(), leaf.where)
    smallest = 1 << 8 * (MIN_BYTES - 1)
    candidates = {format(value, "x"): what for value, what in secrets.integers.items() if value >= smallest}
    long_from = threshold(Counter(len(h) for h in candidates), sum(len(r) for r in runs), 16)
    findings = [f"{tokens[h]}: hexadecimal {h} is {what}" for h, what in candidates.items() if h in tokens]
    findings += substring_findings({h: w for h, w in candidates.items() if len(h) >= long_from}, runs, "hexadecimal")
    return findings, long_from


def substring_findings(needles: dict[Any, str], haystacks: dict[Any, str], kind: str) -> list[str]:
    """Needles found inside haystacks, by an index of each haystack's windows of the shortest needle length."""
    if not needles or not haystacks:
        return []
    width = min(len(needle) for needle in needles)
    index: dict[Any, list[tuple[Any, int]]] = defaultdict(list)
    for haystack in haystacks:
        for start in range(len(haystack) - width + 1):
            index[haystack[start:start + width]].append((haystack, start))
    findings = []
    for needle, what in needles.items():
        for haystack, start in index.get(needle[:width], ()):
            if haystack[start:start + len(needle)] == needle:
                findings.append(f"{haystacks[haystack]}: {kind} of {what} at offset {start}")
                break
    return findings


def base64_blobs(leaves: Iterable[Leaf]) -> dict[bytes, str]:
    """Every base64-looking string (standard and URL-safe, 6 characters or more: 4 bytes), decoded."""
    blobs: dict[bytes, str] = {}
    for leaf in leaves:
        if not isinstance(leaf.value, str):
            continue
        for pattern, decoder in ((BASE64_CANDIDATE, base64.b64decode), (BASE64URL_CANDIDATE, base64.urlsafe_b64decode)):
            for match in pattern.finditer(leaf.value):
                text = match.group()
                padded = text if "=" in text else text + "=" * (-len(text) % 4)
                try:
                    blob = decoder(padded)
                except ValueError:
                    continue
                blobs.setdefault(blob, leaf.where)
    return blobs


def search_base64(leaves: Iterable[Leaf], secrets: Secrets) -> tuple[list[str], int]:
    """Encoded integers of ≥ 4 bytes as big-endian bytes in decoded base64.

    as a whole string's value (any leading zeros), or at any offset when long enough that chance
    cannot explain it. Returns the findings and that length (in bytes).
    """
    blobs = base64_blobs(leaves)
    needles = {}
    for value, what in secrets.integers.items():
        length = (value.bit_length() + 7) // 8
        if length >= MIN_BYTES:
            needles[value.to_bytes(length, "big")] = what
    long_from = threshold(Counter(len(b) for b in needles), sum(len(b) for b in blobs), 256)
    findings = []
    for blob, where in blobs.items():
        what = secrets.integers.get(int.from_bytes(blob, "big"))
        if what is not None and len(blob) >= MIN_BYTES:
            findings.append(f"{where}: base64 of {what}")
    findings += substring_findings({b: w for b, w in needles.items() if len(b) >= long_from}, blobs, "base64 bytes")
    return findings, long_from


# Planting: a copy of the corpus with one string leaf of a given source changed.

def plant_text(corpus: list[Leaf], source: str, text: str, free_text: bool = True) -> tuple[list[Leaf], str]:
    """A copy of ``corpus`` in which one real string leaf of ``source`` has ``text`` appended; and its location."""
    for index, leaf in enumerate(corpus):
        if leaf.source == source and isinstance(leaf.value, str) and (leaf.key not in OPAQUE_KEYS) == free_text:
            planted = list(corpus)
            planted[index] = dataclasses.replace(leaf, value=f"{leaf.value} {text}")
            return planted, leaf.where
    raise AssertionError(f"no string leaf in {source} to plant into")


def plant_number(corpus: list[Leaf], source: str, key: str, value: int | float) -> tuple[list[Leaf], str]:
    donor = next(leaf for leaf in corpus if leaf.source == source)
    where = f"{donor.where} (planted)"
    return [*corpus, Leaf(where, key, value, source)], where


SOURCES = ("traffic", "database", "job view", "process log")


# --------------------------------------------------------------------------------------------
# The tests: the scenario itself
# --------------------------------------------------------------------------------------------

def test_scenario_took_every_path(run, protocol, holdings):
    """The jobs ran over every path the searches must cover; without them the rest proves little."""
    jobs = run.job_ids
    assert set(protocol.specs) == set(jobs.values()), "every job was opened at the coordinator"
    assert run.models["exact"]["stop_reason"].startswith("exact"), run.models["exact"]["stop_reason"]
    assert protocol.kinds[(jobs["standardised"], 0)] == STATISTICS, "the standardised job began with statistics"
    assert protocol.kinds[(jobs["not_binary"], 0)] == STATISTICS
    # Refusals at join (data) and of a round (policy), each from the owner meant to refuse.
    codes = {(owner, body["error"]) for _, owner, _, body in protocol.owner_errors if body.get("type") == "Refused"}
    assert (MISSING_COLUMN_OWNER, "missing_column (column 'unused_score')") in codes, codes
    assert (NOT_BINARY_OWNER, f"not_binary (column '{BINARY_LABEL}')") in codes, codes
    assert (NOT_BINARY_OWNER, "policy:max_rounds") in codes, codes
    assert owners_of_job(holdings, jobs["missing_column"]) == sorted(set(OWNER_NAMES) - {MISSING_COLUMN_OWNER})
    assert owners_of_job(holdings, jobs["not_binary"]) == sorted(set(OWNER_NAMES) - {NOT_BINARY_OWNER})
    # Dropout: failed attempts with contributions, retried on a smaller member set; the owner
    # rejoined with a new job key after its restart.
    dropout = jobs["dropout"]
    failed = [a for a in protocol.attempts.values() if a.job == dropout and not protocol.is_aggregated(a)]
    assert any(DROPOUT_OWNER in a.members and DROPOUT_OWNER not in a.contributions and len(a.contributions) >= 2
               for a in failed), "no attempt failed for want of the killed owner"
    assert any(NOT_BINARY_OWNER in a.members and len(a.contributions) >= 2 for a in failed), \
        "no attempt failed on a refusal by policy"
    smaller = [a for a in protocol.attempts.values() if a.job == dropout and protocol.is_aggregated(a)
               and DROPOUT_OWNER not in a.members]
    assert smaller, "no round was aggregated without the killed owner"
    assert len({a.member_keys[DROPOUT_OWNER] for a in protocol.attempts.values()
                if a.job == dropout and DROPOUT_OWNER in a.members}) == 2, "the restarted owner did not rejoin"
    # The coordinator started twice, the second time in the middle of its job, which went on.
    restarted = jobs["coordinator_restart"]
    starts = [i for i, line in enumerate(run.log_lines) if "coordinator listening on" in line]
    rounds_logged = [i for i, line in enumerate(run.log_lines) if f"job {restarted} round" in line]
    assert len(starts) == 2 and rounds_logged[0] < starts[1] < rounds_logged[-1], "no restart mid-job"
    # Masking needs at least two members in every attempt (with one, there is no mask).
    assert all(len(a.members) >= 2 for a in protocol.attempts.values())
    for label, model in run.models.items():
        assert {r for j, r in protocol.kinds if j == jobs[label]} == set(range(len(model["history"])))


    directions = {record["direction"] for record in run.records}
    assert directions == {"received", "answered", "sent", "reply"}


# --------------------------------------------------------------------------------------------
# The tests: no plaintext number anywhere, in any encoding
# --------------------------------------------------------------------------------------------

def test_no_secret_number_appears_as_decimal_text(run, corpus, secrets):
    """Every secret as a decimal number standing on its own in any string.

    Every row count (3 digits and up), CSV value, statistic, weight, gradient and coefficient,
    and every encoded integer.
    """
    ports = set(run.ports.values())
    amber, birch = OWNER_NAMES[0], OWNER_NAMES[1]
    total = sum(run.sizes.values())
    _, csv_values = read_table(run.owners[birch])
    written = next(cell for cell in csv_values[0] if re.fullmatch(r"\d+\.\d+", cell))
    gradient = next(value for value, what in secrets.integers.items() if "encoded gradient of amber" in what
                    and value < 1 << 80 and "mod n" not in what and "slot" not in what)
    controls = [
        (f"rows={run.sizes[amber]};", f"{amber}'s row count"),
        (f"({total})", f"the row count of {'+'.join(OWNER_NAMES)}"),
        (f"value {written} at", f"a value of {birch}'s CSV"),
        (f"g={gradient}", "encoded gradient of amber"),
    ]
    for source in SOURCES:
        for text, what in controls:
            planted, where = plant_text(corpus, source, text)
            hits = [f for f in search_decimal_text(planted, secrets, ports) if f.startswith(where) and what in f]
            assert hits, f"the decimal search did not find {text!r} planted in {where}"
    findings = search_decimal_text(corpus, secrets, ports)
    assert not findings, "\n".join(findings[:30])


def test_no_number_outside_the_protocol_metadata_appears_in_json(run, corpus, secrets):
    """A JSON number (or SQL number) under any key but the metadata keys is a finding, secret or not."""
    birch = OWNER_NAMES[1]
    controls = [("rows", run.sizes[birch], f"is {birch}'s row count"),
                ("value", float(numbers_in_csv(run.owners[birch])[1][3]), f"a value of {birch}'s CSV"),
                ("total", sum(run.sizes.values()), "the row count of"),
                ("anything", 12345, "outside the protocol's metadata")]
    for source in SOURCES:
        for key, value, what in controls:
            planted, where = plant_number(corpus, source, key, value)
            hits = [f for f in search_json_numbers(planted, secrets) if f.startswith(where) and what in f]
            assert hits, f"the JSON search did not find {key}={value!r} planted in {where}"
    findings = search_json_numbers(corpus, secrets)
    assert not findings, "\n".join(findings[:30])


def test_no_secret_integer_appears_in_hexadecimal(corpus, secrets):
    """Every encoded integer of 4 bytes or more as hexadecimal.

    a whole token anywhere, or inside any hexadecimal run (fingerprints, keys, ids) once it is long
    enough that chance cannot explain it.
    """
    short = next(v for v, what in secrets.integers.items() if 1 << 24 <= v < 1 << 32)
    long = next(v for v, what in secrets.integers.items() if "encoded gradient" in what and v >= 1 << 100)
    _, long_from = search_hexadecimal(corpus, secrets)
    assert len(format(long, "x")) >= long_from
    for source in SOURCES:
        for text, value in ((f"0x{short:X}", short), (f"id={format(long, 'x')}", long),
                            (f"ab12{format(long, 'x')}ff00", long)):
            planted, where = plant_text(corpus, source, text)
            hits = [f for f in search_hexadecimal(planted, secrets)[0]
                    if f.startswith(where) and secrets.integers[value] in f]
            assert hits, f"the hexadecimal search did not find {text!r} planted in {where}"
    findings, long_from = search_hexadecimal(corpus, secrets)
    assert not findings, "\n".join(findings[:30])
    print(f"hexadecimal: {len(secrets.integers)} integers; substring search from {long_from} hex digits")


def test_no_secret_integer_appears_as_bytes_in_base64(corpus, secrets):
    """Every encoded integer of 4 bytes or more as big-endian bytes inside every decoded base64 string.

    as the whole string's value (leading zeros allowed), or at any offset once long enough that
    chance cannot explain it (the ciphertexts are random bytes).
    """
    short = next(v for v, what in secrets.integers.items() if 1 << 24 <= v < 1 << 32)
    long = next(v for v, what in secrets.integers.items() if "encoded Xᵀy" in what and v >= 1 << 100)
    _, long_from = search_base64(corpus, secrets)
    long_bytes = long.to_bytes((long.bit_length() + 7) // 8, "big")
    assert len(long_bytes) >= long_from
    plants = [
        (base64.b64encode(short.to_bytes(4, "big")).decode(), short, False),
        (base64.b64encode(bytes(12) + short.to_bytes(4, "big")).decode(), short, False),
        (base64.b64encode(b"\x17\x2a\x99" + long_bytes + b"\x01\x02\x03\x04\x05").decode(), long, False),
        (base64.urlsafe_b64encode(b"\xfb\xff" + long_bytes + b"\xfe").decode(), long, False),
        (base64.b64encode(b"\x17\x2a\x99" + long_bytes + b"\x01\x02").decode(), long, True),
    ]
    for source in SOURCES:
        for text, value, opaque in plants:
            if opaque and source == "process log":
                continue  # a log line is free text only
            planted, where = plant_text(corpus, source, text, free_text=not opaque)
            hits = [f for f in search_base64(planted, secrets)[0]
                    if f.startswith(where) and secrets.integers[value] in f]
            assert hits, f"the base64 search did not find {text[:40]}… planted in {where}"
    findings, long_from = search_base64(corpus, secrets)
    assert not findings, "\n".join(findings[:30])
    print(f"base64: {len(base64_blobs(corpus))} strings; substring search from {long_from} bytes")


def body_sizes(run: Run, direction: str, path_end: str) -> set[int]:
    """The sizes of the bodies the coordinator's traffic log recorded in ``direction`` on paths ending so."""
    return {len(record["body"].encode()) for record in run.records
            if record["direction"] == direction and record["peer"].endswith(path_end)}


def metadata_findings(leaves: Iterable[Leaf], run: Run, protocol: Protocol) -> list[str]:
    """Every number under a metadata key that is not what the key says it is."""
    rounds = max(len(model["history"]) for model in run.models.values())
    spec_values = defaultdict(set)
    for spec in protocol.specs.values():
        for leaf in json_leaves(spec, "spec", None, "spec"):
            if leaf.key in METADATA_NUMBER_KEYS:
                spec_values[leaf.key].add(leaf.value)
    expected_spec = {"data_frac_bits": {32}, "weight_frac_bits": {32}, "weight_bits": {32}, "min_data_owners": {1},
                     "value_bits": {64 + 32 + 32 + 32}, "count_bits": {10}, "slots_per_ciphertext": {5},
                     "label_scale": {0}}
    assert dict(spec_values) == expected_spec, "every job has the layout of the model creator's settings"
    checks: dict[str, Callable[[Any], bool]] = {
        "round": lambda v: isinstance(v, int) and 0 <= v < rounds,
        "attempt": lambda v: isinstance(v, int) and 1 <= v <= 2 * ROUND_ATTEMPTS,
        "attempts": lambda v: isinstance(v, int) and 0 <= v <= 2 * ROUND_ATTEMPTS,
        "seconds": lambda v: isinstance(v, (int, float)) and 0 <= v <= run.ended - run.started,
        "delivered": lambda v: v in (0, 1),
        "aggregate_bytes": lambda v: v in body_sizes(run, "sent", "/aggregates"),
        "contribution_bytes": lambda v: v in body_sizes(run, "received", "/contributions"),
        "port": lambda v: v in set(run.ports.values()),
        **{key: (lambda v: isinstance(v, (int, float)) and run.started - 60 <= v <= run.ended + 60)
           for key in TIME_KEYS},
        **{key: (lambda v, allowed=allowed: v in allowed) for key, allowed in expected_spec.items()},
        "feature_scales": lambda v: False,
    }
    assert set(checks) == set(METADATA_NUMBER_KEYS)
    findings = []
    for leaf in leaves:
        if leaf.key in METADATA_NUMBER_KEYS and not isinstance(leaf.value, bool) and leaf.value is not None:
            if not checks[leaf.key](leaf.value):
                findings.append(f"{leaf.where}: {leaf.key} = {leaf.value!r} is not {METADATA_NUMBER_KEYS[leaf.key]}")
    return findings


def test_metadata_numbers_are_what_they_claim(run, corpus, protocol):
    """The numbers the other searches leave out are metadata.

    small counters in range, the model creator's fixed layout, clock readings within the test, the
    parties' ports. A row count planted under any of those keys is caught.
    """
    counted = Counter(leaf.key for leaf in corpus if leaf.key in METADATA_NUMBER_KEYS)
    assert {"round", "attempt", "attempts", "seconds", "port", "signed_at", "started_at", "value_bits"} <= set(counted)
    for key in METADATA_NUMBER_KEYS:
        planted, where = plant_number(corpus, "traffic", key, OWNER_SIZES[2])
        assert any(f.startswith(where) for f in metadata_findings(planted, run, protocol)), key
    findings = metadata_findings(corpus, run, protocol)
    assert not findings, "\n".join(findings[:30])


def test_no_field_name_stands_for_a_row_count(corpus):
    """No JSON key or SQL column anywhere is named like a number of rows (only the listed ones match the pattern)."""
    def findings(leaves: Iterable[Leaf]) -> list[str]:
        names = {leaf.value: leaf.where for leaf in leaves if leaf.key == "<key>"}
        names.update({leaf.key: leaf.where for leaf in leaves if leaf.key and leaf.key != "<key>"})
        return [f"{where}: field {name!r}" for name, where in names.items()
                if ROW_WORDS.search(str(name)) and name not in ROW_WORD_KEYS_ALLOWED]
    planted = [*corpus, Leaf("planted", "<key>", "row_count", "traffic")]
    assert findings(planted) == ["planted: field 'row_count'"]
    assert not findings(corpus), "\n".join(findings(corpus))


# --------------------------------------------------------------------------------------------
# The tests: ciphertexts
# --------------------------------------------------------------------------------------------

def ciphertext_findings(texts: Iterable[str], n: int) -> list[str]:
    """Every text that is not a ciphertext: base64 of 0 < c < n², gcd(c, n) = 1, with randomness, fixed width."""
    nsquare, width = n * n, (2 * n.bit_length() + 7) // 8
    findings = []
    for text in texts:
        try:
            raw = base64.b64decode(text, validate=True)
        except ValueError:
            findings.append(f"{text[:24]}…: not base64")
            continue
        c = int.from_bytes(raw, "big")
        if len(raw) != width:
            findings.append(f"{text[:24]}…: {len(raw)} bytes, not the fixed {width}")
        if not 0 < c < nsquare:
            findings.append(f"{text[:24]}…: outside 0 < c < n²")
        elif math.gcd(c, n) != 1:
            findings.append(f"{text[:24]}…: shares a factor with n")
        elif (c - 1) % n == 0:
            findings.append(f"{text[:24]}…: g^m without randomness (anyone reads m = (c − 1) / n)")
    return findings


def encode(c: int, n: int) -> str:
    return base64.b64encode(c.to_bytes((2 * n.bit_length() + 7) // 8, "big")).decode()


def test_every_ciphertext_is_well_formed(run, protocol):
    n = int(run.key.public_key.n)
    p = int(run.key.p)
    bad = [encode(0, n), encode(p * 12345, n), encode(1 + 77 * n, n), base64.b64encode(b"\x05" * 100).decode(),
           base64.b64encode((n * n + 5).to_bytes(257, "big")).decode(), "not base64!"]
    assert len(ciphertext_findings(bad, n)) >= len(bad)
    texts = list(protocol.occurrences)
    assert len(texts) > 300
    findings = ciphertext_findings(texts, n)
    assert not findings, "\n".join(findings[:30])


def shared_randomness(ciphertexts: Sequence[int], n: int) -> list[tuple[int, int]]:
    """Pairs (i, j) of distinct ciphertexts with (c_i · c_j⁻¹ mod n² − 1) mod n = 0: the same r^n.

    With g = n + 1, c = (1 + m·n)·r^n, so c_i / c_j = 1 + (m_i − m_j)·n exactly when r_i = r_j.
    """
    nsquare = gmpy2.mpz(n) * n
    values = [gmpy2.mpz(c) for c in ciphertexts]
    inverses = [gmpy2.invert(c, nsquare) for c in values]
    pairs = []
    for i, c in enumerate(values):
        for j in range(i + 1, len(values)):
            if (c * inverses[j] % nsquare - 1) % n == 0:
                pairs.append((i, j))
    return pairs


def test_no_two_ciphertexts_share_randomness(run, protocol):
    """Across every job (one key), no two distinct ciphertexts the coordinator handled share r."""
    n = int(run.key.public_key.n)
    distinct = sorted({ciphertext_int(text) for text in protocol.occurrences})
    # Control: the same randomness with another message is caught; fresh randomness is not.
    c = distinct[0]
    same_r = c * (1 + 7 * n) % (n * n)
    fresh = c * pow(123457, n, n * n) % (n * n)
    assert shared_randomness([c, fresh, same_r], n) == [(0, 2)]
    pairs = shared_randomness(distinct, n)
    assert not pairs, f"{len(pairs)} pair(s) of ciphertexts share their randomness"
    print(f"{len(distinct)} distinct ciphertexts, {len(distinct) * (len(distinct) - 1) // 2} pairs checked")


def relay_findings(occurrences: dict[str, list[tuple[str, tuple]]]) -> tuple[list[str], Counter[str]]:
    """Ciphertexts met more than once other than as one message relayed; and the relays seen, by kind.

    Allowed: the model creator's encrypted weights of one round (its order, repeated when it asks
    again) sent on to each member of each attempt and stored to resume the round; a round's
    aggregate stored, then delivered (again after a restart); one owner's contribution resent.
    """
    findings, relays = [], Counter()
    for _text, seen in occurrences.items():
        roles = {role for _, role in seen}
        where = "; ".join(place for place, _ in seen[:4])
        if any(role[0] == "unexpected" for role in roles):
            findings.append(f"{where}: a ciphertext outside the protocol's fields")
        elif len(roles) > 1:
            findings.append(f"{where}: one ciphertext in {len(roles)} roles {sorted(roles)}")
        elif len(seen) > 1:
            (role,) = roles
            if role[0] == "weight" and any(place.endswith(" order") for place, _ in seen):
                relays["weights relayed to owners or stored"] += len(seen) - 1
            elif role[0] == "aggregate":
                relays["aggregates stored or delivered again"] += len(seen) - 1
            elif role[0] == "contribution":
                relays["contributions resent"] += len(seen) - 1
            else:
                findings.append(f"{where}: {role} met {len(seen)} times, not as a relay")
    return findings, relays


def test_identical_ciphertexts_are_only_messages_relayed(protocol):
    occurrences = protocol.occurrences
    weight = next(t for t, seen in occurrences.items() if seen[0][1][0] == "weight")
    contribution = next(t for t, seen in occurrences.items() if seen[0][1][0] == "contribution")
    aggregate = next(t for t, seen in occurrences.items() if seen[0][1][0] == "aggregate")
    for text, role in ((weight, ("contribution", "j", 0, 1, "amber", 0)), (contribution, ("aggregate", "j", 0, 0)),
                       (aggregate, ("aggregate", "other job", 3, 0)), (contribution, ("unexpected",))):
        planted = copy.deepcopy(occurrences)
        planted[text].append(("planted", role))
        assert relay_findings(planted)[0], role
    findings, relays = relay_findings(occurrences)
    assert not findings, "\n".join(findings[:30])
    # Which relays: each gradient attempt's weights to each member (and stored), each aggregate stored and delivered.
    gradient_attempts = [a for a in protocol.attempts.values() if a.weights is not None]
    assert relays["weights relayed to owners or stored"] >= sum(len(a.members) * len(a.weights)
                                                                for a in gradient_attempts)
    assert relays["aggregates stored or delivered again"] >= sum(len(s[0]["ciphertexts"])
                                                                 for s in protocol.aggregates.values())
    for attempt in gradient_attempts:
        assert attempt.weights in protocol.orders[(attempt.job, attempt.round)], "weights relayed as ordered"
    print(dict(relays))


# --------------------------------------------------------------------------------------------
# The tests: the masks
# --------------------------------------------------------------------------------------------

def expected_sum(holdings, protocol: Protocol, attempt: Attempt) -> list[int]:
    weights = protocol.weights.get((attempt.job, attempt.round))
    replies = [exact_reply(holdings[(attempt.job, name)], attempt.kind, weights) for name in attempt.members]
    return [sum(column) for column in zip(*replies, strict=True)]


def numpy_sum(holdings, protocol: Protocol, attempt: Attempt) -> tuple[np.ndarray, np.ndarray]:
    """The attempt's sum as numpy computes it from the CSVs: (value, scale for the tolerance)."""
    held = [holdings[(attempt.job, name)] for name in attempt.members]
    spec = protocol.specs[attempt.job]
    if attempt.kind == STATISTICS:
        value = np.concatenate([sum(h.feature_sum for h in held), sum(h.feature_square_sum for h in held)])
        return value, np.abs(value)
    point = np.array([w / 2.0 ** spec["weight_frac_bits"] for w in protocol.weights[(attempt.job, attempt.round)]])
    gram, moment = sum(h.gram for h in held), sum(h.moment for h in held)
    return gram @ point - moment, np.abs(gram) @ np.abs(point) + np.abs(moment)


def test_no_single_contribution_unpacks_but_every_aggregate_does(run, protocol, holdings):
    """Section 9.

    one owner's reply decrypts to masked noise; the product over its attempt's whole member set (the
    coordinator's aggregate) decrypts to the exact sum numpy computes from the CSVs.
    """
    decrypt = Decryptor(run.key)
    checked = 0
    for attempt in protocol.attempts.values():
        spec = protocol.specs[attempt.job]
        for owner, texts in attempt.contributions.items():
            plaintexts = [decrypt(ciphertext_int(t)) for t in texts]
            assert unpacks(plaintexts, spec, attempt.kind) is None, \
                f"{owner}'s contribution to {attempt.job} round {attempt.round} attempt {attempt.attempt} unpacks"
            # Unmasked, the same reply would unpack: the assertion above is not vacuous.
            unmasked = pack_plain(exact_reply(holdings[(attempt.job, owner)], attempt.kind,
                                              protocol.weights.get((attempt.job, attempt.round))),
                                  SlotLayout.model_validate(spec["layout"]))
            assert unpacks(unmasked, spec, attempt.kind) is not None
            checked += 1
    assert checked >= 100
    aggregated = 0
    for (job, number), sent in protocol.aggregates.items():
        attempt = protocol.aggregated[(job, number)]
        assert attempt is not None, f"job {job} round {number}: the aggregate is no attempt's product"
        assert all(s["ciphertexts"] == sent[0]["ciphertexts"] for s in sent), "one aggregate per round"
        assert sorted(sent[0]["contributors"]) == sorted(attempt.members) == sorted(attempt.contributions)
        spec = protocol.specs[job]
        unpacked = unpacks([decrypt(ciphertext_int(t)) for t in sent[0]["ciphertexts"]], spec, attempt.kind)
        assert unpacked is not None, f"job {job} round {number}: the aggregate does not unpack"
        contributors, values = unpacked
        assert contributors == len(attempt.members)
        assert values == expected_sum(holdings, protocol, attempt), f"job {job} round {number}"
        assert values[0] == sum(run.sizes[name] for name in attempt.members)
        frac = spec["data_frac_bits"] + (0 if attempt.kind == STATISTICS else spec["weight_frac_bits"])
        reference, scale = numpy_sum(holdings, protocol, attempt)
        got = np.array([v / 2.0**frac for v in values[1:]])
        assert np.all(np.abs(got - reference) <= 1e-9 * scale + 2.0**-frac), (job, number, got, reference)
        aggregated += 1
    assert aggregated == sum(len(model["history"]) for model in run.models.values())


def test_no_incomplete_attempt_unpacks(run, protocol):
    """Section 9.

    the contributions of an attempt that lost a member, multiplied together, still carry the missing
    member's masks; so does any strict subset of a complete attempt.
    """
    decrypt = Decryptor(run.key)
    nsquare = protocol.n**2
    incomplete = 0
    for attempt in protocol.attempts.values():
        spec = protocol.specs[attempt.job]
        subsets = []
        complete = set(attempt.contributions) == set(attempt.members)
        if protocol.is_aggregated(attempt) or (complete and attempt.late):
            # A complete set (aggregated, or completed by a reply after the deadline, which the
            # coordinator then refused) is a sum the members accepted; its strict subsets are not.
            subsets = [subset for size in range(2, len(attempt.members))
                       for subset in itertools.combinations(attempt.contributions, size)]
        elif attempt.contributions:
            assert not complete, \
                f"{attempt.job} round {attempt.round} attempt {attempt.attempt}: every member replied, yet it failed"
            subsets = [tuple(attempt.contributions)]
            incomplete += len(attempt.contributions) >= 2
        for subset in subsets:
            product = [1] * len(next(iter(attempt.contributions.values())))
            for owner in subset:
                texts = attempt.contributions[owner]
                product = [p * ciphertext_int(t) % nsquare for p, t in zip(product, texts, strict=True)]
            assert unpacks([decrypt(c) for c in product], spec, attempt.kind) is None, \
                f"{subset} of {attempt.job} round {attempt.round} attempt {attempt.attempt} unpacks"
    assert incomplete >= 3, "the dropout, the rejoin and the refusals by policy each left an attempt incomplete"


def test_aggregates_decrypt_only_under_the_model_creators_key(run, protocol, holdings, other_small_key):
    """Under the model creator's key each aggregate gives the protocol's sum.

    under an unrelated key of the same size, none does, and no weight decrypts to the weight
    queried.
    """
    right, wrong = Decryptor(run.key), Decryptor(other_small_key)
    assert int(other_small_key.public_key.n) != protocol.n
    for (job, number), sent in protocol.aggregates.items():
        attempt = protocol.aggregated[(job, number)]
        spec, expected = protocol.specs[job], expected_sum(holdings, protocol, attempt)
        texts = sent[0]["ciphertexts"]
        truth = (len(attempt.members), expected)
        assert unpacks([right(ciphertext_int(t)) for t in texts], spec, attempt.kind) == truth
        assert unpacks([wrong(ciphertext_int(t)) for t in texts], spec, attempt.kind) != truth
    for (job, number), point in protocol.weights.items():
        texts = protocol.orders[(job, number)][0]
        assert [right.signed(ciphertext_int(t)) for t in texts] == point
        assert all(wrong.signed(ciphertext_int(t)) != w for t, w in zip(texts, point, strict=True))
        limit = 1 << (protocol.specs[job]["weight_bits"] + protocol.specs[job]["weight_frac_bits"])
        assert all(abs(w) < limit for w in point), "a weight decrypts outside the job's weight range"


def test_every_message_names_the_model_creators_key(run, corpus, protocol):
    public_key = run.key.public_key
    n = int(public_key.n)
    fingerprint = hashlib.sha256(n.to_bytes((n.bit_length() + 7) // 8, "big")).hexdigest()
    assert public_key.fingerprint == fingerprint
    moduli = [leaf for leaf in corpus if leaf.key == "n"]
    assert moduli and all(leaf.value == format(n, "x") for leaf in moduli), "a job under another key"
    fingerprints = [leaf for leaf in corpus if leaf.key in ("fingerprint", "key_fingerprint")]
    assert len(fingerprints) > 100 and all(leaf.value == fingerprint for leaf in fingerprints)
    assert {spec["key_fingerprint"] for spec in protocol.specs.values()} == {fingerprint}
    private = [format(int(run.key.p), "x"), format(int(run.key.q), "x"), str(int(run.key.p)), str(int(run.key.q))]
    assert not [leaf.where for leaf in corpus if isinstance(leaf.value, str) and any(x in leaf.value for x in private)]


def test_model_creator_key_file_is_private(run):
    mode = stat.S_IMODE(run.key_path.stat().st_mode)
    assert mode == 0o600, oct(mode)


# --------------------------------------------------------------------------------------------
# The tests: refusals and errors
# --------------------------------------------------------------------------------------------

REFUSAL_MESSAGE = re.compile(r"(?P<code>[a-z_:]+)(?: \(column '(?P<column>[^']*)'\))?")


def refusal_findings(message: str, columns: Sequence[str], owner_files: Sequence[str]) -> list[str]:
    """What a refusal may not carry: anything but a known code and one of the job's columns."""
    match = REFUSAL_MESSAGE.fullmatch(message)
    if match is None:
        return [f"{message!r} is not a code and a column"]
    findings = []
    if match["code"] not in REFUSAL_CODES:
        findings.append(f"{message!r}: unknown code {match['code']!r}")
    if match["column"] is not None and match["column"] not in columns:
        findings.append(f"{message!r}: column {match['column']!r} is not one of the job's")
    return findings + content_findings(message, owner_files)


def content_findings(text: str, owner_files: Sequence[str]) -> list[str]:
    """A path, a file name, a row number, a column no job reads, or any number at all."""
    findings = []
    if re.search(r"(?:^|[\s'\"(])(?:/[\w.-]+){2,}|\w\.csv\b|[A-Za-z]:\\", text):
        findings.append(f"{text!r}: names a path or file")
    if any(part in text for part in owner_files):
        findings.append(f"{text!r}: names an owner's file or directory")
    if re.search(r"\brows?\s*\d", text, re.IGNORECASE):
        findings.append(f"{text!r}: names a row")
    if any(column in text for column in UNREAD_COLUMNS):
        findings.append(f"{text!r}: names a column no job reads (the owner's schema)")
    if DECIMAL_TOKEN.search(RANDOM_LOOKING.sub(" ", text)):
        findings.append(f"{text!r}: carries a number")
    return findings


def owner_files(run: Run) -> list[str]:
    """Every path and file name of the owners' data and state that must never leave them."""
    parts = []
    for name, path in run.owners.items():
        parts += [str(path), path.name, str(path.parent), str(run.workdir / f"data_owner_{name}")]
    return parts


def test_refusals_carry_only_a_code_and_a_job_column(run, protocol):
    """Section 7.

    what reached the coordinator of each refusal, at join, of a round and as a refusal message, and
    what the coordinator made of it in its records.
    """
    files = owner_files(run)
    columns_of = {job: [*spec["features"], spec["label"]] for job, spec in protocol.specs.items()}
    controls = [
        (f"not_binary (column '{BINARY_LABEL}') in {run.owners['cedar']} row 195", [BINARY_LABEL]),
        ("missing_column (column 'listing_id')", ["z1"]),
        ("missing_column: the header has sqft, listing_id", ["sqft"]),
        ("bad_value (column 'z1') 3.25", ["z1"]),
        ("policy:leaky", []),
    ]
    for message, columns in controls:
        assert refusal_findings(message, columns, files), message
    findings, refusals = [], 0
    for where, owner, job_id, body in protocol.owner_errors:
        assert set(body) == {"error", "type"}, f"{where}: {body}"
        if body["type"] == "Refused":
            refusals += 1
            findings += [f"{where} ({owner}): {f}" for f in refusal_findings(body["error"], columns_of[job_id], files)]
        else:
            # Other errors (an owner that forgot a job after its restart) name the job, nothing of the data.
            findings += [f"{where} ({owner}): {f}" for f in content_findings(body["error"], files)
                         if "carries a number" not in f]
    for where, job_id, body in protocol.refusal_bodies:
        refusals += 1
        assert set(body) <= {"data_owner", "attempt", "code", "column"}, f"{where}: {body}"
        message = body["code"] if body.get("column") is None else f"{body['code']} (column '{body['column']}')"
        findings += [f"{where}: {f}" for f in refusal_findings(message, columns_of[job_id], files)]
    assert refusals >= 4
    # Where the coordinator recorded them: each refusal it passes on is the code and the column.
    recorded = 0
    for where, text in recorded_reasons(run):
        for match in re.finditer(r"HTTP 422: ([^;]*)|refused: (?!PUT|POST)([^;]*)", text):
            recorded += 1
            message = (match[1] or match[2]).strip()
            findings += [f"{where}: {f}" for f in refusal_findings(message, sorted(set().union(*columns_of.values())),
                                                                   files)]
    assert recorded >= 10
    assert not findings, "\n".join(findings[:30])


def raw_strings(node: Any, where: str, key: str | None = None) -> Iterator[tuple[str, str]]:
    """Every string of a JSON document but the opaque ones, as it is (URLs left in)."""
    if isinstance(node, dict):
        for name, value in node.items():
            yield from raw_strings(value, f"{where}.{name}", name)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from raw_strings(value, f"{where}[{index}]", key)
    elif isinstance(node, str) and key not in OPAQUE_KEYS:
        if node[:1] in "{[":
            try:
                yield from raw_strings(json.loads(node), where, key)
                return
            except ValueError:
                pass
        yield where, node


def recorded_reasons(run: Run) -> Iterator[tuple[str, str]]:
    """Every string the coordinator received, stored, answered, delivered or logged, as it was."""
    for index, record in enumerate(run.records):
        where = f"traffic log line {index + 1}"
        yield f"{where} peer", record["peer"]
        body = record["body"]
        try:
            yield from raw_strings(json.loads(body), f"{where} body") if body.strip() else iter(())
        except ValueError:
            yield f"{where} body", body
    for table, rows in run.tables.items():
        for index, row in enumerate(rows):
            for column, value in row.items():
                yield from raw_strings(value, f"coordinator.sqlite3 {table} row {index + 1} column {column}", column)
    for job_id, view in run.job_views.items():
        yield from raw_strings(view, f"GET /jobs/{job_id} answer")
    for index, line in enumerate(run.log_lines):
        yield f"coordinator.log line {index + 1}", line


def test_no_path_file_name_row_number_or_unread_column_anywhere(run, corpus):
    """Nothing the coordinator handled names an owner's file, its directories, a row, or a column no job reads."""
    files = owner_files(run)

    def findings(leaves: Iterable[Leaf]) -> list[str]:
        found = []
        for leaf in leaves:
            if not isinstance(leaf.value, str):
                continue
            text = leaf.value
            if leaf.key in OPAQUE_KEYS:
                # Random bytes in base64 spell "/row7" or "agent" by chance: an opaque value is
                # held to its encoding instead, which leaves no room for a path, a name or a row.
                if text != REDACTED and not ENCODED_VALUE.fullmatch(text):
                    found.append(f"{leaf.where}: readable text where an encoded value belongs")
                continue
            if any(part in text for part in files):
                found.append(f"{leaf.where}: names an owner's file or directory")
            if re.search(r"\brow\s*\d", text, re.IGNORECASE):
                found.append(f"{leaf.where}: names a row")
            if any(column in text for column in UNREAD_COLUMNS):
                found.append(f"{leaf.where}: names a column no job reads")
        return found

    for source in SOURCES:
        for text in (str(run.owners["amber"]), "birch.csv", "row 17", "listing_id"):
            planted, where = plant_text(corpus, source, text)
            assert any(f.startswith(where) for f in findings(planted)), (source, text)
    for source in ("traffic", "database", "job view"):
        for text in (str(run.owners["amber"]), "birch.csv", "row 17", "listing_id"):
            planted, where = plant_text(corpus, source, text, free_text=False)
            assert any(f.startswith(where) for f in findings(planted)), (source, text)
    # The URLs in free text were split off into their own leaves: search the raw texts too.
    raw = [Leaf(where, "raw", text, "raw") for where, text in recorded_reasons(run)]
    found = findings([*corpus, *raw])
    assert not found, "\n".join(found[:30])


# --------------------------------------------------------------------------------------------
# The tests: a rogue coordinator replaying an attempt (its own federation)
# --------------------------------------------------------------------------------------------

def signed_slots(plaintext: int, n: int, layout: dict[str, int]) -> list[int]:
    """The slots of a plaintext that is a difference of two packed messages (each slot signed)."""
    width = layout["value_bits"] + 1 + layout["count_bits"]
    value = plaintext if plaintext < n // 2 else plaintext - n
    slots = []
    for _ in range(layout["slots_per_ciphertext"]):
        slot = value % (1 << width)
        slot -= (1 << width) if slot >= 1 << (width - 1) else 0
        slots.append(slot)
        value = (value - slot) >> width
    return slots


def test_a_replayed_attempt_with_other_weights_reveals_nothing(tmp_path):
    """Section 1.

    the coordinator may replay and forge; section 9: what it can decrypt is a sum over a whole
    member set. Here it replays a member's request for an attempt, with one weight shifted by one
    unit (E(w_j)·g = E(w_j + 1)), and divides the two replies.
    """
    owners = write_owners(tmp_path / "data")
    amber = OWNER_NAMES[0]
    log = tmp_path / "traffic.jsonl"
    with running_federation(tmp_path / "federation", list(owners.items()), write_test_data(tmp_path / "data"),
                            coordinator_traffic_log=log, owner_options=["--min-peers", "3"]) as federation:
        model_id = _start(federation, {"features": STD_FEATURES, "label": STD_LABEL, "optimizer": "gd",
                                       "learning_rate": 1e-3, "max_rounds": 200})
        _wait_for_round(federation, model_id, 3)
        federation.model_creator.stop()  # the job stays joined at the owners
        time.sleep(1.0)
        records = traffic_records(log)
        owner_url = federation.data_owner(amber).url
        request = [json.loads(r["body"]) for r in records
                   if r["direction"] == "sent" and r["peer"] == f"{owner_url}/jobs/{model_id}/rounds"][-1]
        spec = next(json.loads(r["body"])["spec"] for r in records if r["direction"] == "received"
                    and r["peer"] == "/jobs" and json.loads(r["body"])["spec"]["job_id"] == model_id)
        key = PrivateKey.from_json(json.loads(
            (tmp_path / "federation" / "model_creator" / "paillier_private_key.json").read_text()))
        n = int(key.public_key.n)
        shifted = {**request, "encrypted_weights": list(request["encrypted_weights"])}
        shifted["encrypted_weights"][1] = encode(ciphertext_int(request["encrypted_weights"][1]) * (n + 1) % n**2, n)
        tables = dump_tables(tmp_path / "federation" / "coordinator" / "coordinator.sqlite3")
        token = next(row["coordinator_token"] for row in tables["data_owners"] if row["name"] == amber)
        answer = federation.session.post(f"{owner_url}/jobs/{model_id}/rounds", json=shifted, timeout=30,
                                         headers={"Authorization": f"Bearer {token}"})
        time.sleep(1.5)
        records = traffic_records(log)
    path = f"/jobs/{model_id}/rounds/{request['round']}/contributions"
    replies = [json.loads(r["body"])["ciphertexts"] for r in records if r["direction"] == "received"
               and r["peer"] == path and json.loads(r["body"])["data_owner"] == amber
               and json.loads(r["body"])["attempt"] == request["attempt"]]
    if answer.status_code != 202 or len(replies) < 2:
        return  # the owner refused the replay, or never answered it
    decrypt = Decryptor(key)
    slots = [slot for first, second in zip(replies[0], replies[1], strict=True)
             for slot in signed_slots(decrypt(ciphertext_int(second) * pow(ciphertext_int(first), -1, n**2) % n**2),
                                      n, spec["layout"])]
    features, labels = load_columns(owners[amber], spec["features"], spec["label"])
    column = [row[1] for row in EncryptedAffineMap.prepare(job_spec(spec), features, labels, "amber").matrix]
    assert slots[2:2 + len(column)] != column, f"{amber}'s own encoded XᵀX column 1 decrypts from its two replies"
