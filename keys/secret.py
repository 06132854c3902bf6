"""The node secret: encrypts private keys at rest and signs CSRF tokens.

Taken from the configuration (HEALTHNODE_SECRET or node.secret in the configuration file, which
the command reads into Settings.secret), else from HEALTHNODE_SECRET when set (a node embedded
without the command), otherwise from `node-secret` in the data dir, created on first start with
mode 0600.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRET_ENV = "HEALTHNODE_SECRET"
SECRET_FILE = "node-secret"


class SecretError(Exception):
    pass


SECRET_MIN = 32


def load_or_create_node_secret(data_dir: Path, configured: str | None = None) -> bytes:
    if configured:
        if len(configured) < SECRET_MIN:
            raise SecretError(f"the node secret must be at least {SECRET_MIN} characters")
        return configured.encode()
    from_env = os.environ.get(SECRET_ENV)
    if from_env:
        if len(from_env) < SECRET_MIN:
            raise SecretError(f"{SECRET_ENV} must be at least {SECRET_MIN} characters")
        return from_env.encode()
    path = data_dir / SECRET_FILE
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        value = path.read_text().strip()
        if len(value) < 32:
            raise SecretError(f"{path} is shorter than 32 characters") from None
        if path.stat().st_mode & 0o077:
            raise SecretError(f"{path} must be readable by its owner only (chmod 600)") from None
        return value.encode()
    except OSError as error:
        raise SecretError(f"cannot create {path}: {error.strerror}") from None
    value = secrets.token_urlsafe(48)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(value + "\n")
    return value.encode()
