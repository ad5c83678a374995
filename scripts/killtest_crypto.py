"""WXBizMsgCrypt for the kill test, in pure Python (the standard library has no AES).

AES-256-CBC with the key from the 43-character EncodingAESKey, iv = key[:16], PKCS#7 padding to
32 bytes; plaintext = 16 random bytes + 4-byte big-endian length + message + receive id;
signature = sha1 of the sorted [token, timestamp, nonce, encrypt] concatenated.
"""

from __future__ import annotations

import base64
import hashlib
import struct


def _xtime(a: int) -> int:
    a <<= 1
    return (a ^ 0x11B) if a & 0x100 else a


def _gmul(a: int, b: int) -> int:
    p = 0
    while b:
        if b & 1:
            p ^= a
        a = _xtime(a)
        b >>= 1
    return p


def _build_sbox() -> tuple[list[int], list[int]]:
    inverse = [0] * 256
    for a in range(1, 256):
        for b in range(1, 256):
            if _gmul(a, b) == 1:
                inverse[a] = b
                break
    sbox = [0] * 256
    for a in range(256):
        x = inverse[a]
        s = x
        for shift in range(1, 5):
            s ^= ((x << shift) | (x >> (8 - shift))) & 0xFF
        sbox[a] = s ^ 0x63
    inv = [0] * 256
    for a, s in enumerate(sbox):
        inv[s] = a
    return sbox, inv


SBOX, INV_SBOX = _build_sbox()
MUL = {k: [_gmul(a, k) for a in range(256)] for k in (2, 3, 9, 11, 13, 14)}
ROUNDS = 14


def _expand_key(key: bytes) -> list[list[int]]:
    assert len(key) == 32
    words = [list(key[i : i + 4]) for i in range(0, 32, 4)]
    rcon = 1
    for i in range(8, 4 * (ROUNDS + 1)):
        temp = list(words[i - 1])
        if i % 8 == 0:
            temp = temp[1:] + temp[:1]
            temp = [SBOX[b] for b in temp]
            temp[0] ^= rcon
            rcon = _xtime(rcon) & 0xFF
        elif i % 8 == 4:
            temp = [SBOX[b] for b in temp]
        words.append([a ^ b for a, b in zip(words[i - 8], temp)])
    return [sum(words[4 * r : 4 * r + 4], []) for r in range(ROUNDS + 1)]


def _encrypt_block(keys: list[list[int]], block: bytes) -> bytes:
    s = [a ^ b for a, b in zip(block, keys[0])]
    m2, m3 = MUL[2], MUL[3]
    for r in range(1, ROUNDS + 1):
        s = [SBOX[b] for b in s]
        s = [s[(i % 4) + 4 * (((i // 4) + (i % 4)) % 4)] for i in range(16)]
        if r != ROUNDS:
            t = []
            for c in range(4):
                a0, a1, a2, a3 = s[4 * c : 4 * c + 4]
                t += [
                    m2[a0] ^ m3[a1] ^ a2 ^ a3,
                    a0 ^ m2[a1] ^ m3[a2] ^ a3,
                    a0 ^ a1 ^ m2[a2] ^ m3[a3],
                    m3[a0] ^ a1 ^ a2 ^ m2[a3],
                ]
            s = t
        s = [a ^ b for a, b in zip(s, keys[r])]
    return bytes(s)


def _decrypt_block(keys: list[list[int]], block: bytes) -> bytes:
    s = [a ^ b for a, b in zip(block, keys[ROUNDS])]
    m9, m11, m13, m14 = MUL[9], MUL[11], MUL[13], MUL[14]
    for r in range(ROUNDS - 1, -1, -1):
        t = [0] * 16
        for i in range(16):
            row, col = i % 4, i // 4
            t[row + 4 * ((col + row) % 4)] = s[i]
        s = [INV_SBOX[b] for b in t]
        s = [a ^ b for a, b in zip(s, keys[r])]
        if r != 0:
            t = []
            for c in range(4):
                a0, a1, a2, a3 = s[4 * c : 4 * c + 4]
                t += [
                    m14[a0] ^ m11[a1] ^ m13[a2] ^ m9[a3],
                    m9[a0] ^ m14[a1] ^ m11[a2] ^ m13[a3],
                    m13[a0] ^ m9[a1] ^ m14[a2] ^ m11[a3],
                    m11[a0] ^ m13[a1] ^ m9[a2] ^ m14[a3],
                ]
            s = t
    return bytes(s)


def aes_cbc_encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    assert len(data) % 16 == 0
    keys = _expand_key(key)
    out, prev = bytearray(), iv
    for i in range(0, len(data), 16):
        prev = _encrypt_block(keys, bytes(a ^ b for a, b in zip(data[i : i + 16], prev)))
        out += prev
    return bytes(out)


def aes_cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    assert len(data) % 16 == 0
    keys = _expand_key(key)
    out, prev = bytearray(), iv
    for i in range(0, len(data), 16):
        block = data[i : i + 16]
        out += bytes(a ^ b for a, b in zip(_decrypt_block(keys, block), prev))
        prev = block
    return bytes(out)


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
