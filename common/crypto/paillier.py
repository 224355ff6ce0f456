"""Paillier keys and raw ciphertext operations on gmpy2 integers.

Key generation is python-paillier's (``phe``); encryption, decryption and the homomorphic
operations are done here directly on :mod:`gmpy2` integers, because every value on the wire is
a fixed-point integer whose scale the protocol tracks per message (see
:mod:`common.crypto.encoding`), so phe's per-number float exponents would only add alignment work.

With the generator g = n + 1, ``g ** m = 1 + m·n (mod n²)``, so encoding a plaintext costs one
multiplication; the only exponentiation of an encryption is the obfuscator ``r ** n``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import phe

from common.crypto.bigint import gcd, invert, mpz, powmod, random_unit, to_fixed_bytes
from common.protocol.errors import InvalidCiphertext, KeyMismatch, SchemaError

DEFAULT_KEY_BITS = 2048
#: The smallest key for real data (about 112-bit security); smaller ones only behind a test-only flag.
SECURE_KEY_BITS = 2048
ALLOWED_KEY_BITS = (1024, 2048, 3072, 4096)


@dataclass(frozen=True)
class PublicKey:
    """A Paillier public key with g = n + 1."""

    n: mpz
    nsquare: mpz = field(init=False, repr=False, compare=False)
    fingerprint: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        n = mpz(self.n)
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "nsquare", n * n)
        digest = hashlib.sha256(to_fixed_bytes(n, (n.bit_length() + 7) // 8)).hexdigest()
        object.__setattr__(self, "fingerprint", digest)

    @property
    def bits(self) -> int:
        """Size of the modulus n in bits."""
        return int(self.n.bit_length())

    @property
    def ciphertext_bytes(self) -> int:
        """Width in bytes of a ciphertext (an element of Z_{n²}) on the wire."""
        return (int(self.nsquare.bit_length()) + 7) // 8

    def raw_constant(self, plaintext: int) -> mpz:
        """``g ** plaintext mod n²`` — an encryption of ``plaintext`` *without* randomness.

        Only ever multiplied into a ciphertext that carries randomness of its own; sent alone
        it would reveal ``plaintext`` to anyone holding the public key.
        """
        # gmpy2-stubs 2.2.1.5 types mpz ± int as mpc (an int matches its complex overload first).
        return (1 + (mpz(plaintext) % self.n) * self.n) % self.nsquare  # type: ignore[operator]

    def raw_obfuscator(self) -> mpz:
        """A fresh encryption of zero, ``r ** n mod n²`` for a random unit r."""
        return powmod(random_unit(self.n), self.n, self.nsquare)

    def raw_encrypt(self, plaintext: int, obfuscator: mpz | None = None) -> mpz:
        """Encrypt an integer of Z_n (negative values wrap to n − |v|) with fresh randomness.

        ``obfuscator`` is a fresh ``r ** n`` made ahead of time (see :mod:`common.crypto.randomness`);
        one must never be used twice, or the two ciphertexts could be related.
        """
        if obfuscator is None:
            obfuscator = self.raw_obfuscator()
        return self.raw_constant(plaintext) * obfuscator % self.nsquare

    def raw_add_constant(self, ciphertext: mpz, plaintext: int) -> mpz:
        """E(x), k → E(x + k)."""
        return ciphertext * self.raw_constant(plaintext) % self.nsquare

    def rerandomise(self, ciphertext: mpz, obfuscator: mpz | None = None) -> mpz:
        """The same plaintext under fresh randomness.

        Whoever receives a re-randomised ciphertext cannot link it to the ciphertexts it was
        computed from, so a party holding E(w) cannot test guesses about the coefficients that
        were applied to it. ``obfuscator`` is as for :meth:`raw_encrypt`.
        """
        if obfuscator is None:
            obfuscator = self.raw_obfuscator()
        return ciphertext * obfuscator % self.nsquare

    def check_ciphertext(self, value: int | mpz, where: str) -> mpz:
        """Return ``value`` as a ciphertext if it can be one under this key, else raise.

        python-paillier validates nothing it is given; a value outside Z*_{n²} would decrypt
        to garbage or leak through the error it causes, so every received value passes here.
        """
        c = mpz(value)
        if not 0 < c < self.nsquare:
            raise InvalidCiphertext(f"{where}: ciphertext is not in the range 0 < c < n²")
        if gcd(c, self.n) != 1:
            raise InvalidCiphertext(f"{where}: ciphertext shares a factor with n")
        return c

    def check_fingerprint(self, fingerprint: object, where: str) -> None:
        """Raise :class:`KeyMismatch` unless ``fingerprint`` names this key."""
        if fingerprint != self.fingerprint:
            raise KeyMismatch(f"{where}: key fingerprint {fingerprint!r} is not the job's key {self.fingerprint}")

    def to_json(self) -> dict[str, Any]:
        """The key as JSON: n in hexadecimal and its fingerprint."""
        return {"n": format(int(self.n), "x"), "fingerprint": self.fingerprint}

    @classmethod
    def from_json(cls, payload: object, where: str = "public_key") -> PublicKey:
        """Parse and check a key sent as :meth:`to_json`."""
        if not isinstance(payload, dict) or not isinstance(payload.get("n"), str):
            raise SchemaError(f"{where}: expected an object with a hexadecimal 'n'")
        try:
            n = int(payload["n"], 16)
        except ValueError as exc:
            raise SchemaError(f"{where}.n: not a hexadecimal integer") from exc
        if n <= 0 or n.bit_length() not in ALLOWED_KEY_BITS or n % 2 == 0:
            raise SchemaError(f"{where}.n: an odd modulus of {', '.join(map(str, ALLOWED_KEY_BITS))} bits expected")
        key = cls(mpz(n))
        if "fingerprint" in payload:
            key.check_fingerprint(payload["fingerprint"], where)
        return key


@dataclass(frozen=True)
class PrivateKey:
    """A Paillier private key (the primes p < q) with CRT decryption."""

    public_key: PublicKey
    p: mpz
    q: mpz
    _crt: tuple[mpz, mpz, mpz, mpz, mpz] = field(init=False, repr=False, compare=False)
    _p_square_inverse: mpz = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        p, q = sorted((mpz(self.p), mpz(self.q)))
        if p * q != self.public_key.n or p == q:
            raise ValueError("p and q are not the distinct factors of the public key's n")
        object.__setattr__(self, "p", p)
        object.__setattr__(self, "q", q)
        # gmpy2-stubs 2.2.1.5 types mpz ± int as mpc (an int matches its complex overload first).
        g: mpz = self.public_key.n + 1  # type: ignore[assignment]
        hp = invert((powmod(g, p - 1, p * p) - 1) // p, p)  # type: ignore[arg-type, operator]
        hq = invert((powmod(g, q - 1, q * q) - 1) // q, q)  # type: ignore[arg-type, operator]
        object.__setattr__(self, "_crt", (p * p, q * q, hp, hq, invert(p, q)))
        object.__setattr__(self, "_p_square_inverse", invert(p * p, q * q))

    @classmethod
    def generate(cls, bits: int = DEFAULT_KEY_BITS) -> PrivateKey:
        """A fresh key pair of ``bits`` bits, from python-paillier's prime generation."""
        if bits not in ALLOWED_KEY_BITS:
            raise ValueError(f"key size must be one of {ALLOWED_KEY_BITS}, not {bits}")
        public, private = phe.generate_paillier_keypair(n_length=bits)
        return cls(PublicKey(mpz(public.n)), mpz(private.p), mpz(private.q))

    def raw_obfuscator(self) -> mpz:
        """A fresh uniformly random n-th residue mod n², as ``r ** n`` is, for a quarter of the work.

        Modulo p², the n-th residues are the subgroup of order p − 1, and ``r ** p mod p²``
        depends only on r mod p and is that subgroup's element over r mod p (its Teichmüller
        representative): for a uniform unit r, ``r ** p mod p²`` is uniform over the subgroup,
        exactly as ``r ** n`` is. The same modulo q², joined by CRT, gives an element of the same
        distribution as :meth:`PublicKey.raw_obfuscator`'s — so the same security, no extra
        assumption — from two exponents of half n's length modulo p² and q² instead of one of n's
        length modulo n². Only the holder of the private key can take this path.
        """
        psquare, qsquare, _, _, _ = self._crt
        r = random_unit(self.public_key.n)
        modulo_p = powmod(r, self.p, psquare)
        modulo_q = powmod(r, self.q, qsquare)
        return modulo_p + (modulo_q - modulo_p) * self._p_square_inverse % qsquare * psquare

    def raw_decrypt(self, ciphertext: mpz) -> mpz:
        """The plaintext in [0, n) of a ciphertext, by the Chinese remainder theorem."""
        psquare, qsquare, hp, hq, p_inverse = self._crt
        p, q = self.p, self.q
        # gmpy2-stubs 2.2.1.5 types mpz ± int as mpc (an int matches its complex overload first).
        mp = (powmod(ciphertext, p - 1, psquare) - 1) // p * hp % p  # type: ignore[arg-type, operator]
        mq = (powmod(ciphertext, q - 1, qsquare) - 1) // q * hq % q  # type: ignore[arg-type, operator]
        return mp + (mq - mp) * p_inverse % q * p

    def to_json(self) -> dict[str, str]:
        """The secret primes in hexadecimal; only ever written to the model creator's key file."""
        return {"p": format(int(self.p), "x"), "q": format(int(self.q), "x")}

    @classmethod
    def from_json(cls, payload: dict[str, str]) -> PrivateKey:
        """Rebuild a key written by :meth:`to_json`."""
        p, q = mpz(int(payload["p"], 16)), mpz(int(payload["q"], 16))
        return cls(PublicKey(p * q), p, q)
