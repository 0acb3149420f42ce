"""Client certificates for Sign and SignAndEncrypt: loaded from files, or generated on request."""

from __future__ import annotations

import logging
import socket

from asyncua import Client, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography.x509.oid import ExtendedKeyUsageOID

from connectors.opcua.schema import SecurityConfig

log = logging.getLogger(__name__)

_MODES = {"Sign": ua.MessageSecurityMode.Sign, "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt}


async def ensure_certificate(security: SecurityConfig) -> None:
    """Create a self-signed client certificate whose URI is ``application_uri``, when asked and missing."""
    assert security.certificate is not None and security.private_key is not None
    if security.certificate.exists() and security.private_key.exists():
        return
    if not security.generate_certificate:
        raise FileNotFoundError(f"{security.certificate} or {security.private_key} is missing")
    security.certificate.parent.mkdir(parents=True, exist_ok=True)
    security.private_key.parent.mkdir(parents=True, exist_ok=True)
    await setup_self_signed_certificate(
        security.private_key, security.certificate, security.application_uri, socket.gethostname(),
        [ExtendedKeyUsageOID.CLIENT_AUTH], {"commonName": "pm-gateway", "organizationName": "pm-gateway"},
    )
    log.info("opcua: generated client certificate %s for %s", security.certificate, security.application_uri)


async def apply_security(client: Client, security: SecurityConfig) -> None:
    # The server checks the application URI of the session against the certificate's.
    client.application_uri = security.application_uri
    if security.mode == "None":
        return
    await ensure_certificate(security)
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        certificate=str(security.certificate),
        private_key=str(security.private_key),
        server_certificate=str(security.server_certificate),
        mode=_MODES[security.mode],
    )
