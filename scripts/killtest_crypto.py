"""WXBizMsgCrypt for the kill test, on the `cryptography` package (pinned for the local stack in
infra/requirements-local.txt; scripts/kill-test runs with that environment's Python).

AES-256-CBC with the key from the 43-character EncodingAESKey, iv = key[:16], PKCS#7 padding to
32 bytes; plaintext = 16 random bytes + 4-byte big-endian length + message + receive id;
signature = sha1 of the sorted [token, timestamp, nonce, encrypt] concatenated.
"""

from __future__ import annotations

import base64
import hashlib
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def aes_cbc_encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def aes_cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return decryptor.update(data) + decryptor.finalize()


class MsgCrypt:
    """One app's callback crypto: its Token, EncodingAESKey and receive id (CorpID / AppID)."""

    def __init__(self, token: str, encoding_aes_key: str, receive_id: str):
        self.token = token
        self.key = base64.b64decode(encoding_aes_key + "=")
        assert len(self.key) == 32
        self.receive_id = receive_id

    def signature(self, timestamp: str, nonce: str, encrypt: str) -> str:
        return hashlib.sha1("".join(sorted([self.token, timestamp, nonce, encrypt])).encode()).hexdigest()

    def encrypt(self, xml: str, random16: bytes) -> str:
        body = xml.encode()
        plain = random16 + struct.pack(">I", len(body)) + body + self.receive_id.encode()
        pad = 32 - len(plain) % 32
        plain += bytes([pad]) * pad
        return base64.b64encode(aes_cbc_encrypt(self.key, self.key[:16], plain)).decode()

    def decrypt(self, encrypt: str) -> str:
        plain = aes_cbc_decrypt(self.key, self.key[:16], base64.b64decode(encrypt))
        pad = plain[-1]
        if not 1 <= pad <= 32:
            raise ValueError("bad padding")
        plain = plain[:-pad]
        (length,) = struct.unpack(">I", plain[16:20])
        xml, receive_id = plain[20 : 20 + length], plain[20 + length :]
        if receive_id.decode() != self.receive_id:
            raise ValueError(f"receive id {receive_id!r} is not {self.receive_id!r}")
        return xml.decode()


def plain_signature(token: str, timestamp: str, nonce: str) -> str:
    return hashlib.sha1("".join(sorted([token, timestamp, nonce])).encode()).hexdigest()
