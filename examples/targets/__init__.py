"""This repository's services as target files (sqlite_faults/target.py): what the report,
the battery and the durability suite are told about them, as a stranger would tell them
about their own service."""

from pathlib import Path

from sqlite_faults.target import load_target

FOLDER = Path(__file__).resolve().parent
HARDENED = FOLDER / "hardened.toml"
NAIVE = FOLDER / "naive.toml"

HARDENED_TARGET = load_target(HARDENED)
# The users write both services share: POST /users/ {name, password}, read back by id.
USERS_WRITE = HARDENED_TARGET.write

# What every test server of this repository runs with beside its own settings: a cheap
# password hash (argon2 at its production cost would dominate every figure) and a quiet log.
QUICK_ENV = {"PASSWORD_HASH_TIME_COST": "1", "PASSWORD_HASH_MEMORY_KIB": "8",
             "LOG_LEVEL": "WARNING"}
