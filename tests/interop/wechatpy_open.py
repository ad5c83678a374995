"""Opens an encrypted passive reply with wechatpy, an independent WXBizMsgCrypt implementation.

Reads JSON from stdin: {"token", "encoding_aes_key", "app_id", "reply"} where "reply" is the
<xml><Encrypt/><MsgSignature/><TimeStamp/><Nonce/></xml> body wxbridge answered. Verifies the
signature, decrypts, and prints the reply XML. Exits non-zero if wechatpy refuses it.
"""

import json
import sys
import xml.etree.ElementTree as ET

from wechatpy.crypto import WeChatCrypto


def main() -> None:
    request = json.load(sys.stdin)
    reply = ET.fromstring(request["reply"])
    crypto = WeChatCrypto(request["token"], request["encoding_aes_key"], request["app_id"])
    plain = crypto.decrypt_message(
        request["reply"],
        reply.findtext("MsgSignature"),
        reply.findtext("TimeStamp"),
        reply.findtext("Nonce"),
    )
    sys.stdout.write(plain if isinstance(plain, str) else plain.decode("utf-8"))


if __name__ == "__main__":
    main()
