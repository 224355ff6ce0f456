"""What the coordinator sees: only ciphertexts under the model creator's key, and metadata.

The coordinator runs with a traffic log (every request it receives, every answer it gives,
every request it sends and every reply it gets). After real jobs the log is searched for every
plaintext the coordinator must never see (PROTOCOL.md section 1): every number in every owner's
CSV, each owner's row count and statistics, every weight queried, every gradient (per owner,
summed and averaged) and every coefficient — as text and as JSON numbers. Every ciphertext is
checked to be a valid ciphertext under the model creator's key that decrypts (with that key
only) to exactly what the protocol says it carries.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import stat
from collections import defaultdict
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import gmpy2
import numpy as np
import pytest

from common.crypto.paillier import PrivateKey
from e2e_support import (
    RAW_FEATURES,
    RAW_LABEL,
    STD_FEATURES,
    STD_LABEL,
    coordinator_job,
    design,
    generated_owners,
    generated_test_csv,
    load,
    numbers_in_csv,
    post_model,
    row_count,
    running_federation,
    wait_coordinator_job,
)

pytestmark = pytest.mark.e2e

# Three-digit row counts, so that they can be searched for as text, and none equal to a
# protocol constant (value_bits, count_bits, slots ...).
OWNER_SIZES = (157, 243, 389)
CIPHERTEXT_FIELDS = ("encrypted_weights", "ciphertexts")
# Numbers the coordinator may legitimately see: small integers of the protocol, and timings.
METADATA_INTEGERS = {"round", "attempt", "attempts", "value_bits", "count_bits", "slots_per_ciphertext",
                     "data_frac_bits", "weight_frac_bits", "weight_bits", "min_data_owners"}
METADATA_FLOATS = {"seconds"}
MIN_SIGNIFICANT_DIGITS = 4
# A number standing on its own: not part of a hexadecimal or base64 string, nor of a longer number.
NUMBER_TOKEN = re.compile(r"(?<![0-9A-Za-z.+/_])(\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)(?![0-9A-Za-z+/_-]|\.\d)")
# Field names that would stand for a row count (message sizes and contributor counts are metadata
# the coordinator may see, PROTOCOL.md section 1).
ROW_WORDS = re.compile(r"row|sample|record|observation|^n_i$|^n$", re.IGNORECASE)


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


def ciphertext_int(text: str) -> int:
    return int.from_bytes(base64.b64decode(text, validate=True), "big")


def unpack(plaintexts: list[int], layout: dict[str, int], value_count: int) -> tuple[int, list[int]]:
    """(contributor count, signed values) of packed plaintexts; asserts every bit is in a slot."""
    slot_bits = layout["value_bits"] + 1 + layout["count_bits"]
    bias = 1 << layout["value_bits"]
    indices = [-1, *range(value_count)]
    step = layout["slots_per_ciphertext"]
    groups = [indices[i:i + step] for i in range(0, len(indices), step)]
    assert len(plaintexts) == len(groups), f"{len(plaintexts)} packed ciphertexts for {value_count} values"
    slots = {}
    for plaintext, group in zip(plaintexts, groups):
        assert 0 <= plaintext < 1 << (len(group) * slot_bits), "plaintext has bits beyond its slots"
        for position, index in enumerate(group):
            slots[index] = (plaintext >> (position * slot_bits)) & ((1 << slot_bits) - 1)
    contributors = slots[-1]
    assert 1 <= contributors < 1 << layout["count_bits"]
    return contributors, [slots[i] - contributors * bias for i in range(value_count)]


# --------------------------------------------------------------------------------------------
# Walking bodies
# --------------------------------------------------------------------------------------------

def walk(node: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """(path, leaf) for every leaf of a JSON document; keys are leaves too (path ends in '<key>')."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, "<key>"), key
            yield from walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, (*path, index))
    else:
        yield path, node


def last_key(path: tuple) -> str | None:
    return next((part for part in reversed(path) if isinstance(part, str)), None)


def significant_digits(text: str) -> int:
    mantissa = re.split("[eE]", text)[0].lstrip("+-")
    return len(mantissa.replace(".", "").strip("0"))


def text_forms(value: float) -> set[str]:
    """The ways a number is likely to be written: repr/str and a few fixed precisions."""
    value = float(value)
    if not math.isfinite(value):
        return set()
    forms = {repr(value), str(value), f"{value:.6g}", f"{value:.8g}", f"{value:.10g}", f"{value:.12g}",
             f"{value:.2f}", f"{value:.4f}", f"{value:.6f}"}
    if value.is_integer():
        forms.add(str(int(value)))
    return {form.lstrip("-") for form in forms}


class Secrets:
    """Every plaintext the coordinator must not see, as exact values and as text forms."""

    def __init__(self) -> None:
        self.values: dict[float, str] = {}
        self.texts: dict[str, str] = {}

    def add(self, value: float | Fraction | int, what: str) -> None:
        value = float(value)
        if not math.isfinite(value):
            return
        self.values.setdefault(value, what)
        self.values.setdefault(-value, what)
        for form in text_forms(value):
            if significant_digits(form) >= MIN_SIGNIFICANT_DIGITS:
                self.texts.setdefault(form, what)

    def add_text(self, text: str, what: str) -> None:
        text = text.lstrip("-")
        if significant_digits(text) >= MIN_SIGNIFICANT_DIGITS:
            self.texts.setdefault(text, what)


# --------------------------------------------------------------------------------------------
# The federation and its log
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """Three generated owners, a coordinator traffic log and three real jobs (exact, gd, standardised gd)."""
    directory = tmp_path_factory.mktemp("privacy")
    owners = generated_owners(directory / "data", OWNER_SIZES, seed=4242)
    test_csv = generated_test_csv(directory / "data", seed=99)
    log = directory / "coordinator.jsonl"
    with running_federation(directory / "federation", owners, test_csv, coordinator_traffic_log=log) as federation:
        exact = post_model(federation, {"features": RAW_FEATURES, "label": RAW_LABEL})
        descent = post_model(federation, {"features": STD_FEATURES, "label": STD_LABEL, "optimizer": "gd",
                                          "learning_rate": 0.5, "max_rounds": 4})
        # Standardised training starts with a round of encrypted feature sums and sums of squares.
        standardised = post_model(federation, {"features": RAW_FEATURES, "label": RAW_LABEL, "optimizer": "gd",
                                               "learning_rate": 0.5, "max_rounds": 3, "standardize": True})
        models = [exact, descent, standardised]
        for model in models:
            assert model["status"] == "finished", model.get("error")
        jobs = {}
        for model in models:
            # The model creator closes the job at the coordinator after it records the model.
            jobs[model["model_id"]] = wait_coordinator_job(federation, model["model_id"])
        records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
        key_path = directory / "federation" / "model_creator" / "paillier_private_key.json"
        yield {
            "federation": federation, "owners": owners, "models": models, "records": records,
            "jobs": jobs, "key_path": key_path,
            "key": PrivateKey.from_json(json.loads(key_path.read_text())),
        }


@pytest.fixture(scope="module")
def traffic(audited):
    """The log's messages, parsed, with every ciphertext decrypted and checked against the protocol."""
    key: PrivateKey = audited["key"]
    decrypt = Decryptor(key)
    n, nsquare = int(key.public_key.n), int(key.public_key.n) ** 2
    messages = []
    for record in audited["records"]:
        assert set(record) == {"direction", "peer", "body"}, record
        body = json.loads(record["body"]) if record["body"].strip() else None
        messages.append({**record, "path": urlparse(record["peer"]).path, "json": body})

    specs = {}
    for message in messages:
        if message["direction"] == "received" and message["path"] == "/jobs":
            specs[message["json"]["spec"]["job_id"]] = message["json"]["spec"]
    assert set(specs) == set(audited["jobs"]), "every job was opened at the coordinator"

    plaintext_of: dict[str, int] = {}

    def open_all(strings: list[str]) -> list[int]:
        result = []
        for text in strings:
            c = ciphertext_int(text)
            assert 0 < c < nsquare, "ciphertext outside 0 < c < n²"
            assert math.gcd(c, n) == 1, "ciphertext shares a factor with n"
            assert (c - 1) % n != 0, "ciphertext is g^m without randomness: anyone can read m = (c − 1) / n"
            if text not in plaintext_of:
                plaintext_of[text] = decrypt(c)
            result.append(plaintext_of[text])
        return result

    kinds: dict[tuple[str, int], str] = {}
    weights: dict[tuple[str, int], list[Fraction]] = {}
    weight_texts: dict[tuple[str, int], list[str]] = {}
    contributions: dict[tuple[str, int], dict[str, list[int]]] = defaultdict(dict)
    aggregates: dict[tuple[str, int], dict[str, Any]] = {}
    origins: list[str] = []  # every ciphertext where it was created: model creator, owner or coordinator
    for message in messages:
        body, path, direction = message["json"], message["path"], message["direction"]
        parts = path.strip("/").split("/")
        if direction == "received" and len(parts) == 3 and parts[0] == "jobs" and parts[2] == "rounds":
            spec = specs[parts[1]]
            kinds[(parts[1], body["round"])] = body.get("kind", "gradient")
            if "encrypted_weights" not in body:
                assert body.get("kind") == "statistics", body
                continue
            limit = 1 << (spec["weight_bits"] + spec["weight_frac_bits"])
            decoded = []
            for m in open_all(body["encrypted_weights"]):
                signed = m if m < n // 2 else m - n
                assert abs(signed) < limit, "an encrypted weight decrypts outside the job's weight range"
                decoded.append(Fraction(signed, 1 << spec["weight_frac_bits"]))
            assert len(decoded) == len(spec["features"]) + 1
            weights[(parts[1], body["round"])] = decoded
            weight_texts[(parts[1], body["round"])] = body["encrypted_weights"]
            origins += body["encrypted_weights"]
        elif direction == "received" and len(parts) == 5 and parts[2] == "rounds" and parts[4] == "contributions":
            spec = specs[parts[1]]
            count = value_count(spec, kinds[(parts[1], int(parts[3]))])
            contributors, values = unpack(open_all(body["ciphertexts"]), spec["layout"], count)
            assert contributors == 1, "a single owner's reply counts one contributor"
            contributions[(parts[1], int(parts[3]))][body["data_owner"]] = values
            origins += body["ciphertexts"]
        elif direction == "sent" and len(parts) == 3 and parts[2] == "aggregates":
            spec = specs[parts[1]]
            count = value_count(spec, kinds[(parts[1], body["round"])])
            contributors, values = unpack(open_all(body["ciphertexts"]), spec["layout"], count)
            aggregates[(parts[1], body["round"])] = {"contributors": contributors, "values": values,
                                                     "names": body["contributors"]}
            origins += body["ciphertexts"]
    contributions = dict(contributions)
    # Whatever else carries a ciphertext field carries one of these, checked above.
    for message in messages:
        for path, leaf in walk(message["json"]):
            if last_key(path) in CIPHERTEXT_FIELDS and path[-1] != "<key>":
                assert isinstance(leaf, str), (message["peer"], path)
                open_all([leaf])
                assert leaf in set(origins), f"{message['direction']} {message['peer']}: a ciphertext of unknown origin"
    return {"messages": messages, "specs": specs, "weights": weights, "contributions": contributions,
            "aggregates": aggregates, "origins": origins, "kinds": kinds, "weight_texts": weight_texts,
            "plaintext_of": plaintext_of}


def value_count(spec: dict, kind: str) -> int:
    """Values in a reply: row count and gradient, or row count, feature sums and sums of squares."""
    return 1 + (2 * len(spec["features"]) if kind == "statistics" else len(spec["features"]) + 1)


def owner_statistics(path: Path, features: list[str], label: str) -> tuple[np.ndarray, np.ndarray, int]:
    x, y = load(path, features, label)
    d = design(x)
    return d.T @ d, d.T @ y, len(y)


@pytest.fixture(scope="module")
def secrets(audited, traffic) -> Secrets:
    found = Secrets()
    owners = audited["owners"]
    total = 0
    for name, path in owners:
        texts, values = numbers_in_csv(path)
        assert len(values) > 1000
        for text, value in zip(texts, values):
            found.add(value, f"a value of {name}'s CSV")
            found.add_text(text, f"a value of {name}'s CSV")
        rows = row_count(path)
        total += rows
        found.add(rows, f"{name}'s row count")
    found.add(total, "the total row count")
    for spec in traffic["specs"].values():
        features, label = spec["features"], spec["label"]
        pooled_gram, pooled_moment = 0, 0
        for name, path in owners:
            gram, moment, _ = owner_statistics(path, features, label)
            pooled_gram, pooled_moment = pooled_gram + gram, pooled_moment + moment
            for value in [*gram.ravel(), *moment]:
                found.add(value, f"{name}'s statistics XᵀX / Xᵀy")
        for value in [*np.ravel(pooled_gram), *np.ravel(pooled_moment)]:
            found.add(value, "the pooled statistics")
    for model in audited["models"]:
        for value in model["coefficients"].values():
            found.add(value, f"a coefficient of model {model['model_id']}")
        for name in ("scaling", "standardized_coefficients", "metrics"):
            for path, value in walk(model.get(name)):
                if isinstance(value, float):
                    found.add(value, f"{name} of model {model['model_id']}")
        for entry in model["history"]:
            if entry.get("gradient_norm") is not None:
                found.add(entry["gradient_norm"], "a gradient norm")
            for path, value in walk({key: entry.get(key) for key in ("validation_mse", "validation")}):
                if isinstance(value, float):
                    found.add(value, "a validation metric")
    for (job, round_number), point in traffic["weights"].items():
        for value in point:
            if value:
                found.add(value, f"a weight queried in job {job} round {round_number}")
    for (job, round_number), replies in traffic["contributions"].items():
        frac = traffic["specs"][job]["data_frac_bits"] + traffic["specs"][job]["weight_frac_bits"]
        if traffic["kinds"][(job, round_number)] == "statistics":
            frac = traffic["specs"][job]["data_frac_bits"]
        for owner, values in replies.items():
            for value in values[1:]:
                found.add(Fraction(value, 1 << frac), f"{owner}'s gradient in job {job} round {round_number}")
    for (job, round_number), aggregate in traffic["aggregates"].items():
        frac = traffic["specs"][job]["data_frac_bits"] + traffic["specs"][job]["weight_frac_bits"]
        if traffic["kinds"][(job, round_number)] == "statistics":
            frac = traffic["specs"][job]["data_frac_bits"]
        rows = aggregate["values"][0]
        for value in aggregate["values"][1:]:
            found.add(Fraction(value, 1 << frac), f"the summed gradient of job {job} round {round_number}")
            found.add(Fraction(value, (1 << frac) * rows), f"the mean gradient of job {job} round {round_number}")
    return found


# --------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------

def test_log_covers_every_kind_of_message(traffic, audited):
    directions = {message["direction"] for message in traffic["messages"]}
    assert directions == {"received", "answered", "sent", "reply"}
    assert "statistics" in traffic["kinds"].values(), "the standardised job had no statistics round"
    for model in audited["models"]:
        job = model["model_id"]
        rounds = len(model["history"])
        gradient_rounds = {entry["round"] for entry in model["history"] if entry.get("kind", "gradient") == "gradient"}
        assert {r for j, r in traffic["kinds"] if j == job} == set(range(rounds))
        assert {r for j, r in traffic["weights"] if j == job} == gradient_rounds
        assert {r for j, r in traffic["aggregates"] if j == job} == set(range(rounds))
        for round_number in range(rounds):
            assert set(traffic["contributions"].get((job, round_number), {})) == {name for name, _ in audited["owners"]}


def test_no_plaintext_number_appears_as_text(traffic, secrets):
    ciphertexts = {leaf for message in traffic["messages"] for path, leaf in walk(message["json"])
                   if isinstance(leaf, str) and last_key(path) in CIPHERTEXT_FIELDS}
    assert len(secrets.texts) > 5000
    leaks = []
    for message in traffic["messages"]:
        text = message["body"]
        for ciphertext in ciphertexts & set(re.findall(r"[A-Za-z0-9+/=]{100,}", text)):
            text = text.replace(ciphertext, "")
        for token in NUMBER_TOKEN.findall(text):
            if token in secrets.texts:
                leaks.append(f"{message['direction']} {message['peer']}: {token!r} is {secrets.texts[token]}")
    assert not leaks, "\n".join(leaks[:20])


def test_only_small_metadata_numbers_appear_in_json(traffic, secrets, audited):
    row_counts = {row_count(path) for _, path in audited["owners"]}
    row_counts.add(sum(row_counts))
    problems = []
    for message in traffic["messages"]:
        for path, leaf in walk(message["json"]):
            if isinstance(leaf, bool) or not isinstance(leaf, (int, float)):
                continue
            where = f"{message['direction']} {message['peer']} at {'.'.join(map(str, path))} = {leaf!r}"
            key = last_key(path)
            if key in METADATA_INTEGERS:
                if not isinstance(leaf, int) or not 0 <= leaf <= 10_000 or leaf in row_counts:
                    problems.append(f"{where}: not small protocol metadata")
            elif key in METADATA_FLOATS:
                if leaf in secrets.values:
                    problems.append(f"{where}: equals {secrets.values[leaf]}")
            elif float(leaf) in secrets.values:
                problems.append(f"{where}: equals {secrets.values[float(leaf)]}")
            elif not isinstance(leaf, int) or abs(leaf) > 10_000:
                problems.append(f"{where}: a number that is not small metadata")
    assert not problems, "\n".join(problems[:20])


def test_every_ciphertext_is_valid_and_carries_what_the_protocol_says(traffic, audited):
    """Decrypted with the model creator's key, each owner's reply is exactly its row count and
    A_i·w − b_i at the round's weights, and each aggregate is exactly the sum of the replies."""
    owners = dict(audited["owners"])
    checked = 0
    for (job, round_number), replies in traffic["contributions"].items():
        spec = traffic["specs"][job]
        statistics_round = traffic["kinds"][(job, round_number)] == "statistics"
        for owner, values in replies.items():
            gram, moment, rows = owner_statistics(owners[owner], spec["features"], spec["label"])
            assert values[0] == rows, f"{owner}'s encrypted row count"
            if statistics_round:
                x, _ = load(owners[owner], spec["features"], spec["label"])
                expected = np.concatenate([x.sum(axis=0), (x**2).sum(axis=0)])
                scale = np.abs(expected)
                got = np.array([v / 2.0 ** spec["data_frac_bits"] for v in values[1:]])
            else:
                point = np.array([float(w) for w in traffic["weights"][(job, round_number)]])
                expected = gram @ point - moment
                scale = np.abs(gram) @ np.abs(point) + np.abs(moment)
                got = np.array([v / 2.0 ** (spec["data_frac_bits"] + spec["weight_frac_bits"]) for v in values[1:]])
            assert np.all(np.abs(got - expected) <= 1e-9 * scale), (owner, job, round_number)
            checked += 1
        aggregate = traffic["aggregates"][(job, round_number)]
        assert aggregate["contributors"] == len(replies) == len(aggregate["names"]) == len(owners)
        assert sorted(aggregate["names"]) == sorted(replies)
        assert aggregate["values"] == [sum(column) for column in zip(*replies.values())]
    assert checked >= 3 * 5


def test_ciphertexts_are_fresh_and_relayed_unchanged(traffic, audited):
    """Every ciphertext the model creator, an owner or the coordinator makes is new; the
    coordinator forwards the model creator's encrypted weights to each owner as they are."""
    origins = traffic["origins"]
    assert len(origins) == len(set(origins)), "a ciphertext was sent twice: no fresh randomness"
    relayed = 0
    for message in traffic["messages"]:
        parts = message["path"].strip("/").split("/")
        if message["direction"] == "sent" and len(parts) == 3 and parts[2] == "rounds":
            body = message["json"]
            if traffic["kinds"][(parts[1], body["round"])] == "statistics":
                assert "encrypted_weights" not in body
                continue
            assert body["encrypted_weights"] == traffic["weight_texts"][(parts[1], body["round"])]
            relayed += 1
    assert relayed == len(traffic["weight_texts"]) * len(audited["owners"])


def test_ciphertexts_do_not_decrypt_under_another_key(traffic, other_small_key):
    wrong = Decryptor(other_small_key)
    items = list(traffic["plaintext_of"].items())
    assert len(items) > 50
    for text, plaintext in items[:: max(1, len(items) // 60)]:
        assert wrong(ciphertext_int(text)) != plaintext


def test_job_spec_names_the_model_creators_key(traffic, audited):
    public_key = audited["key"].public_key
    n_hex = format(int(public_key.n), "x")
    fingerprint = hashlib.sha256(int(public_key.n).to_bytes((int(public_key.n).bit_length() + 7) // 8, "big"))
    assert public_key.fingerprint == fingerprint.hexdigest()
    opened = shared = 0
    for message in traffic["messages"]:
        body = message["json"]
        if isinstance(body, dict) and "public_key" in body:
            assert body["public_key"]["n"] == n_hex, f"{message['direction']} {message['peer']}"
            assert body["spec"]["key_fingerprint"] == public_key.fingerprint
            opened += message["direction"] == "received"
            shared += message["direction"] == "sent"
        if isinstance(body, dict) and "key_fingerprint" in body:
            assert body["key_fingerprint"] == public_key.fingerprint
    assert opened == len(audited["jobs"]) and shared == len(audited["jobs"]) * len(audited["owners"])
    private_parts = [format(int(audited["key"].p), "x"), format(int(audited["key"].q), "x")]
    assert not any(part in message["body"] for message in traffic["messages"] for part in private_parts)


def test_coordinator_job_view_shows_no_row_counts(audited, secrets):
    federation = audited["federation"]
    row_counts = {row_count(path) for _, path in audited["owners"]}
    row_counts.add(sum(row_counts))
    for job_id in audited["jobs"]:
        job = coordinator_job(federation, job_id)
        assert job["status"] == "finished"
        for path, leaf in walk(job):
            if path[-1:] == ("<key>",):
                assert not ROW_WORDS.search(str(leaf)), f"field {leaf!r} in {job}"
            if isinstance(leaf, (int, float)) and not isinstance(leaf, bool):
                assert leaf not in row_counts or last_key(path) in METADATA_FLOATS, (path, leaf)
                if last_key(path) not in METADATA_INTEGERS:
                    assert float(leaf) not in secrets.values, (path, leaf, secrets.values.get(float(leaf)))
        text = json.dumps(job)
        assert not set(NUMBER_TOKEN.findall(text)) & {str(count) for count in row_counts}


def test_model_creator_key_file_is_private(audited):
    mode = stat.S_IMODE(audited["key_path"].stat().st_mode)
    assert mode == 0o600, oct(mode)
