"""``python -m common.service.backup STATE_DIR DESTINATION``: back up a party's state databases.

Every SQLite database of the party's state directory (``*.sqlite3``: the coordinator's registry
and jobs, the model creator's models, a data owner's privacy ledger) is copied into
``DESTINATION`` with SQLite's online backup API, while the party runs: each copy is one
consistent state of its database, checked with SQLite's integrity check, mode 0600. To restore,
stop the party and copy the files back into its state directory.

Key files (the model creator's private key, a data owner's identity key and operator token) are
not databases and are not copied: they are secrets, which the operator keeps where it keeps them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.service.storage import backup, unusable


def main(arguments: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.service.backup", description=__doc__.splitlines()[0])
    parser.add_argument("state_dir", type=Path, help="the party's state directory (its --state-dir)")
    parser.add_argument("destination", type=Path, help="directory to write the copies to (created, mode 0700)")
    options = parser.parse_args(arguments)
    databases = sorted(options.state_dir.glob("*.sqlite3"))
    if not databases:
        print(f"no state database (*.sqlite3) in {options.state_dir}", file=sys.stderr)
        return 1
    for database in databases:
        copy = options.destination / database.name
        backup(database, copy)
        problem = unusable(copy, version=sys.maxsize)
        if problem is not None:
            print(f"{database}: the copy is not usable: {problem}", file=sys.stderr)
            return 1
        print(f"{database} -> {copy}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
