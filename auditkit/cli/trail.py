"""`auditkit trail`: create an audit trail, change its keys, make a signing key, finish a stopped publish."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from auditkit.cli.app import Application
from auditkit.cli.options import output_options


@click.group()
def trail() -> None:
    """Create an audit trail, change the keys it demands, make signing keys, recover after a crash.

    \b
    Keys come from the environment, as for `forget` and `audit`: AUDITKIT_TRAIL_KEY (an HMAC secret)
    and AUDITKIT_TRAIL_SIGNING_KEY (the path of an Ed25519 private key, PEM). Verify with
    `auditkit verify TRAIL [--public-key KEY.pub.pem]`.
    """


def _on_trail(name: str) -> Callable[[Any], Any]:
    """A `trail` subcommand that takes the trail's path (TRAIL) and the output options."""
    def decorate(function: Any) -> Any:
        function = output_options(click.pass_obj(function))
        return trail.command(name)(click.argument("path", metavar="TRAIL", type=click.Path(path_type=Path))(function))
    return decorate


@trail.command()
@click.argument("private_key", metavar="PRIVATE.pem", type=click.Path(path_type=Path))
@click.option("--public", "public_key", type=click.Path(path_type=Path), default=None,
              help="Where the public key goes [default: PRIVATE.pub.pem].")
@output_options
@click.pass_obj
def keygen(app: Application, private_key: Path, public_key: Path | None) -> int:
    """Make an Ed25519 key pair to sign a trail with: PRIVATE.pem (mode 0600; encrypted with
    AUDITKIT_TRAIL_SIGNING_PASSPHRASE when set) for the operator, PRIVATE.pub.pem for auditors.
    Prints the public key (hex) on stdout; existing files are never replaced."""
    from auditkit.evidence.signing import SIGNING_KEY_ENV, fingerprint, generate_key_pair

    public_key = public_key or private_key.with_name(private_key.name.removesuffix(".pem") + ".pub.pem")
    public = generate_key_pair(private_key, public_key)
    app.info(f"private key: {private_key} (keep it secret; sign with {SIGNING_KEY_ENV}={private_key})")
    app.info(f"public key: {public_key} (for auditors: auditkit verify TRAIL --public-key {public_key}); "
             f"fingerprint {fingerprint(public)}")
    if app.json_output:
        app.emit_json({"private_key": str(private_key), "public_key": str(public_key), "ed25519": public,
                       "fingerprint": fingerprint(public)})
    else:
        click.echo(public)
    return 0


@_on_trail("init")
def init(app: Application, path: Path) -> int:
    """Start a new trail at TRAIL, demanding the keys set in the environment (an HMAC with
    AUDITKIT_TRAIL_KEY, signatures with AUDITKIT_TRAIL_SIGNING_KEY, both or neither). The first
    `forget` on a missing trail does the same; init makes it explicit, e.g. on a separate mount."""
    from auditkit.evidence.ledger import init_trail
    from auditkit.evidence.signing import TrailKeys
    from auditkit.evidence.trail import KeyPolicy

    line = init_trail(path, keys=TrailKeys.from_env())
    policy = KeyPolicy.from_json(line.entry["keys"])
    app.info(f"created audit trail {path}: trail ID {line.entry['trail_id']}, keys: {policy.describe()}")
    app.emit_json({"trail": str(path), "trail_id": line.entry["trail_id"], "keys": line.entry["keys"],
                   "head_sha256": line.line_sha256})
    return 0


@_on_trail("keys")
@click.option("--hmac/--no-hmac", "hmac", default=None,
              help="From the next line on, demand (or stop demanding) an HMAC with AUDITKIT_TRAIL_KEY.")
@click.option("--sign", "signing_key", type=click.Path(path_type=Path), default=None, metavar="PRIVATE.pem",
              help="From the next line on, demand signatures by this Ed25519 key (turns signing on, or rotates "
                   "the key).")
@click.option("--no-sign", is_flag=True, help="Stop demanding signatures.")
def keys(app: Application, path: Path, hmac: bool | None, signing_key: Path | None, no_sign: bool) -> int:
    """Change the keys TRAIL demands, as a recorded keys event.

    \b
    The event is endorsed with the keys in force (from the environment), so only their holder can
    change them, and authenticated with the new ones; `verify` accepts it and checks every later
    line against the new keys. To change the HMAC secret: --no-hmac with the old one set, then
    --hmac with the new one.
    """
    from auditkit.errors import InputError
    from auditkit.evidence.ledger import change_keys
    from auditkit.evidence.signing import TrailKeys, load_private_key
    from auditkit.evidence.trail import KeyPolicy

    if signing_key is not None and no_sign:
        raise InputError("--sign and --no-sign contradict each other", hint="pass one of them")
    if hmac is None and signing_key is None and not no_sign:
        raise InputError("no change of keys was asked for", hint="pass --hmac, --no-hmac, --sign PRIVATE.pem or --no-sign")
    signing = load_private_key(signing_key, flag="--sign") if signing_key is not None else None
    line = change_keys(path, keys=TrailKeys.from_env(), hmac=hmac, signing=signing, stop_signing=no_sign)
    policy = KeyPolicy.from_json(line.entry["keys"])
    app.info(f"audit trail {path}: from line {line.number + 1} on it demands {policy.describe()} (keys event on "
             f"line {line.number})")
    app.emit_json({"trail": str(path), "line": line.number, "keys": line.entry["keys"], "head_sha256": line.line_sha256})
    return 0


@_on_trail("recover")
def recover(app: Application, path: Path) -> int:
    """Do now what the next run on TRAIL would do first: publish a run that was stopped between being
    logged and being published, and remove an append cut short by a crash or a full disk."""
    from auditkit.evidence.ledger import recover_trail
    from auditkit.evidence.signing import TrailKeys

    notes = recover_trail(path, keys=TrailKeys.from_env())
    for note in notes:
        app.info(note)
    if not notes:
        app.info(f"audit trail {path}: nothing to recover")
    app.emit_json({"trail": str(path), "recovered": notes})
    return 0
