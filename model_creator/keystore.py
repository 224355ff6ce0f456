"""The model creator's Paillier key pair, kept in its state directory with mode 0600.

Generated once, on first use, and reused across restarts: every stored model and every job in
flight refers to the key by its fingerprint.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from pathlib import Path

from common.crypto.paillier import SECURE_KEY_BITS, PrivateKey
from common.service.settings import SettingsError

logger = logging.getLogger(__name__)

KEY_FILE = "paillier_private_key.json"


class KeyStore:
    """Loads or creates the key pair on first use, once, thread-safely."""

    def __init__(self, state_dir: str | Path, bits: int, test_only_small_keys: bool = False) -> None:
        self.path = Path(state_dir) / KEY_FILE
        self.bits = bits
        self.test_only_small_keys = test_only_small_keys
        self._lock = threading.Lock()
        self._key: PrivateKey | None = None

    def private_key(self) -> PrivateKey:
        with self._lock:
            if self._key is None:
                self._key = self._load() if self.path.exists() else self._create()
            return self._key

    def _load(self) -> PrivateKey:
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o077:
            logger.warning("%s was readable by others (mode %o); restricting it to 0600", self.path, mode)
            self.path.chmod(0o600)
        key = PrivateKey.from_json(json.loads(self.path.read_text()))
        if key.public_key.bits < SECURE_KEY_BITS and not self.test_only_small_keys:
            raise SettingsError(
                f"{self.path}: the key has {key.public_key.bits} bits, fewer than {SECURE_KEY_BITS}; such keys are"
                " for tests only (--test-only-small-keys)"
            )
        logger.info("loaded Paillier key %s (%d bits)", key.public_key.fingerprint[:16], key.public_key.bits)
        return key

    def _create(self) -> PrivateKey:
        key = PrivateKey.generate(self.bits)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.unlink(missing_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(key.to_json(), handle)
        os.replace(temporary, self.path)
        logger.info("generated Paillier key %s (%d bits) in %s", key.public_key.fingerprint[:16], self.bits, self.path)
        return key
