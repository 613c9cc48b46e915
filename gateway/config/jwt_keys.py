"""Is ``JWT_SECRET_KEY`` usable for ``JWT_ALGORITHM``? Checked once at start-up, so a wrong key
stops the gateway with one line instead of answering every client 401 ("do not reconnect")."""

from __future__ import annotations

import hashlib

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

HMAC_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
_CURVES: dict[str, tuple[type[ec.EllipticCurve], str]] = {
    "ES256": (ec.SECP256R1, "P-256"),
    "ES384": (ec.SECP384R1, "P-384"),
    "ES512": (ec.SECP521R1, "P-521"),
}
_MIN_RSA_BITS = 2048
_PRIVATE = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)


def hmac_problem(algorithm: str, secret: str) -> str | None:
    """RFC 7518 3.2: an HS* secret has at least as many bytes as the hash's output."""
    shortest = HMAC_HASHES[algorithm]().digest_size
    length = len(secret.encode())
    if length < shortest:
        return (
            f"{algorithm} needs a secret of at least {shortest} bytes, got {length}; "
            f"generate one with: python -c 'import secrets; print(secrets.token_hex({shortest}))'"
        )
    return None


def public_key_problem(algorithm: str, pem: str) -> str | None:
    """What is wrong with ``pem`` as the verifying key of an RS*/PS*/ES*/EdDSA ``algorithm``."""
    wanted = _wanted(algorithm)
    key = _load(pem.encode())
    if key is None:
        return f"{wanted}, and this is not a key it can read"
    if isinstance(key, _PRIVATE):
        return f"{algorithm} needs the public key, not the private key (the gateway only verifies)"
    if algorithm in _CURVES:
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return f"{wanted}, not {_kind(key)}"
        if not isinstance(key.curve, _CURVES[algorithm][0]):
            return f"{wanted}, not one on {key.curve.name}"
    elif algorithm == "EdDSA":
        if not isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            return f"{wanted}, not {_kind(key)}"
    elif not isinstance(key, rsa.RSAPublicKey):
        return f"{wanted}, not {_kind(key)}"
    elif key.key_size < _MIN_RSA_BITS:
        return f"{algorithm} needs an RSA key of at least {_MIN_RSA_BITS} bits, got {key.key_size}"
    try:
        # What the token checks will do with it: PyJWT must accept it too.
        jwt.get_algorithm_by_name(algorithm).prepare_key(pem)
    except (jwt.InvalidKeyError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        return f"{wanted}; PyJWT refuses this one ({type(exc).__name__})"
    return None


def _wanted(algorithm: str) -> str:
    if algorithm in _CURVES:
        return f"{algorithm} needs an EC public key on curve {_CURVES[algorithm][1]} in PEM"
    if algorithm == "EdDSA":
        return "EdDSA needs an Ed25519 or Ed448 public key in PEM"
    return f"{algorithm} needs an RSA public key in PEM"


def _load(data: bytes) -> object | None:
    try:
        return load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        pass
    try:
        return load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None


def _kind(key: object) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return "an RSA key"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "an EC key"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "an Ed25519 key"
    if isinstance(key, ed448.Ed448PublicKey):
        return "an Ed448 key"
    return f"a {type(key).__name__} key"
