"""Kill test: `wxbridge dev --aws` under WeCom and Official Account traffic, SIGKILLed and restarted.

Plays WeChat (signed, encrypted callbacks with WeChat's re-deliveries) and WeChat's send APIs
(a fake WeCom `gettoken` + `message/send` and Official Account `stable_token` +
`message/custom/send`, recording every send outside the process that gets killed), kills the
bridge with SIGKILL at random points, restarts it, waits until its queues are drained, and checks
that every acknowledged message was answered exactly once and that the dead-letter queues are
empty. Standard library, plus the local stack's pinned `cryptography` for the callback crypto;
see `scripts/kill-test --help`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import http.server
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from killtest_crypto import MsgCrypt, plain_signature  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
T0 = time.monotonic()
WALL0 = time.time()  # the wall clock at T0, to place SQS timestamps on the run's clock

# The accounts of the test (made-up credentials; only the fake WeChat below accepts them).
WECOM = {
    "app": "kt",
    "corp_id": "wwkilltest00000001",
    "agent_id": 1000002,
    "token": "killTestWecomToken",
    "encoding_aes_key": "nRDubK1SCq0IU7bkPJDwdgiZbNr0SLjxD0OT65I4uuY",
    "secret": "kill-test-wecom-secret",
}
OA = {
    "app": "kt",
    "app_id": "wxkilltest0000001",
    "token": "killTestOaToken",
    "encoding_aes_key": "Kq3vL8Qm2Zr7Tn5Wx1Yb4Hc6Jd9Fg0Se3Ua8Vp2Ik7A",
    "app_secret": "kill-test-oa-secret",
}
WECOM_TOKEN = "wecom-access-token-kt"
OA_TOKEN = "oa-access-token-kt"
WECHAT_WAIT = 5.0  # WeChat drops a delivery not answered within 5 s
WECOM_DELIVERIES = 4  # WeCom: a failed callback is delivered again after ~1 s, 4 deliveries in all
WECOM_RETRY_GAP = 1.0
OA_DELIVERIES = 3  # Official Account: a delivery every 5 s, 3 in all


def now() -> float:
    return time.monotonic() - T0


class Log:
    """The script's timeline (events.log), on the same clock as the dev log."""

    def __init__(self, path: Path, verbose: bool):
        self.file = path.open("a", encoding="utf-8")
        self.lock = threading.Lock()
        self.verbose = verbose

    def event(self, text: str, show: bool = False) -> None:
        line = f"[{now():8.3f}] {text}"
        with self.lock:
            self.file.write(line + "\n")
            self.file.flush()
        if show or self.verbose:
            print(line, flush=True)


# ---------------------------------------------------------------- AWS (moto) without boto3


class Aws:
    """The few SQS and DynamoDB calls the test needs, over the emulator's JSON protocol."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint.rstrip("/") + "/"

    def call(self, service: str, target: str, payload: dict) -> dict:
        headers = {
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": target,
            # The emulator routes on the credential scope and checks no signature.
            "Authorization": f"AWS4-HMAC-SHA256 Credential=test/20250101/us-east-1/{service}/aws4_request, "
            "SignedHeaders=host, Signature=0",
        }
        request = urllib.request.Request(self.endpoint, data=json.dumps(payload).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read()
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"{target}: HTTP {err.code}: {err.read()[:300]!r}") from None
        return json.loads(body) if body.strip() else {}

    def sqs(self, action: str, **payload) -> dict:
        return self.call("sqs", f"AmazonSQS.{action}", payload)

    def ddb(self, action: str, **payload) -> dict:
        return self.call("dynamodb", f"DynamoDB_20120810.{action}", payload)

    def create_queue(self, name: str, attributes: dict) -> str:
        return self.sqs("CreateQueue", QueueName=name, Attributes=attributes)["QueueUrl"]

    def queue_arn(self, url: str) -> str:
        return self.sqs("GetQueueAttributes", QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def queue_counts(self, url: str) -> dict:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"]
        attrs = self.sqs("GetQueueAttributes", QueueUrl=url, AttributeNames=names)["Attributes"]
        return {
            "visible": int(attrs.get(names[0], 0)),
            "invisible": int(attrs.get(names[1], 0)),
            "delayed": int(attrs.get(names[2], 0)),
        }

    def drain_messages(self, url: str) -> list[dict]:
        """Every visible message of `url` with its attributes (made invisible for a minute)."""
        seen: dict[str, dict] = {}
        for _ in range(50):
            out = self.sqs(
                "ReceiveMessage",
                QueueUrl=url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=60,
                WaitTimeSeconds=0,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            )
            messages = out.get("Messages", [])
            if not messages:
                break
            for m in messages:
                seen[m["MessageId"]] = m
        return list(seen.values())

    def create_table(self, name: str) -> None:
        self.ddb(
            "CreateTable",
            TableName=name,
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        self.ddb(
            "UpdateTimeToLive",
            TableName=name,
            TimeToLiveSpecification={"AttributeName": "expires_at", "Enabled": True},
        )

    def get_item(self, table: str, pk: str) -> dict | None:
        out = self.ddb("GetItem", TableName=table, Key={"pk": {"S": pk}}, ConsistentRead=True)
        item = out.get("Item")
        if item is None:
            return None
        return {k: next(iter(v.values())) for k, v in item.items()}

    def delete_resources(self, table: str, urls: list[str]) -> None:
        for url in urls:
            try:
                self.sqs("DeleteQueue", QueueUrl=url)
            except RuntimeError:
                pass
        try:
            self.ddb("DeleteTable", TableName=table)
        except RuntimeError:
            pass


# ---------------------------------------------------------------- the fake WeChat send APIs


@dataclass
class Send:
    at: float
    api: str  # "wecom" | "oa"
    to: str
    text: str
    duplicate_check: bool
    body: dict
    # WeCom did not deliver it: an identical message within duplicate_check_interval.
    dropped: bool = False


class FakeWechat:
    """WeCom gettoken + message/send and OA stable_token + message/custom/send (+ typing), checked
    as the real ones check them; every accepted send is recorded here, outside the bridge."""

    def __init__(self, log: Log, api_delay: float = 0.0):
        self.log = log
        self.api_delay = api_delay
        self.sends: list[Send] = []
        self.refused: list[str] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def answer(self, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the bridge was killed while WeChat handled its call: the call still counts

            def refuse(self, code: int, message: str) -> None:
                with fake.lock:
                    fake.refused.append(f"{self.command} {self.path}: {code} {message}")
                fake.log.event(f"fake WeChat refused {self.command} {self.path.split('?')[0]}: {code} {message}", show=True)
                self.answer({"errcode": code, "errmsg": message})

            def read_json(self) -> dict | None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    return None
                return body if isinstance(body, dict) else None

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                if url.path == "/wecom/cgi-bin/gettoken":
                    if query.get("corpid") != WECOM["corp_id"]:
                        return self.refuse(40013, "invalid corpid")
                    if query.get("corpsecret") != WECOM["secret"]:
                        return self.refuse(40001, "invalid credential")
                    return self.answer({"errcode": 0, "errmsg": "ok", "access_token": WECOM_TOKEN, "expires_in": 7200})
                if url.path == "/oa/cgi-bin/token":
                    return self.refuse(48001, "use stable_token")
                self.refuse(404, f"no such API {url.path}")

            def do_POST(self):
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                body = self.read_json()
                if body is None:
                    return self.refuse(47001, "data format error")
                if url.path == "/oa/cgi-bin/stable_token":
                    if body.get("grant_type") != "client_credential" or body.get("appid") != OA["app_id"]:
                        return self.refuse(40013, "invalid appid")
                    if body.get("secret") != OA["app_secret"]:
                        return self.refuse(40125, "invalid appsecret")
                    return self.answer({"access_token": OA_TOKEN, "expires_in": 7200})
                if url.path == "/wecom/cgi-bin/message/send":
                    if query.get("access_token") != WECOM_TOKEN:
                        return self.refuse(40014, "invalid access_token")
                    if body.get("agentid") != WECOM["agent_id"]:
                        return self.refuse(40056, "invalid agentid")
                    text = (body.get("text") or {}).get("content")
                    if body.get("msgtype") != "text" or not isinstance(text, str) or not body.get("touser"):
                        return self.refuse(40008, "invalid message type / touser")
                    # WeChat's API latency: a send is done once WeChat has it, whatever becomes of the caller.
                    time.sleep(fake.api_delay)
                    fake.record_wecom(Send(now(), "wecom", body["touser"], text, body.get("enable_duplicate_check") == 1, body))
                    return self.answer({"errcode": 0, "errmsg": "ok", "invaliduser": "", "msgid": f"m{len(fake.sends)}"})
                if url.path == "/oa/cgi-bin/message/custom/send":
                    if query.get("access_token") != OA_TOKEN:
                        return self.refuse(40001, "invalid credential, access_token is invalid")
                    text = (body.get("text") or {}).get("content")
                    if body.get("msgtype") != "text" or not isinstance(text, str) or not body.get("touser"):
                        return self.refuse(40008, "invalid message type / touser")
                    time.sleep(fake.api_delay)
                    fake.record(Send(now(), "oa", body["touser"], text, False, body))
                    return self.answer({"errcode": 0, "errmsg": "ok"})
                if url.path == "/oa/cgi-bin/message/custom/typing":
                    if query.get("access_token") != OA_TOKEN:
                        return self.refuse(40001, "invalid credential, access_token is invalid")
                    return self.answer({"errcode": 0, "errmsg": "ok"})
                self.refuse(404, f"no such API {url.path}")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def record(self, send: Send) -> None:
        with self.lock:
            self.sends.append(send)
        flags = (" (duplicate_check)" if send.duplicate_check else "") + (" DROPPED as a repeat" if send.dropped else "")
        self.log.event(f"send {send.api} to {send.to}: {send.text!r}{flags}")

    def record_wecom(self, send: Send) -> None:
        """WeCom's duplicate check: with enable_duplicate_check, a message identical to one sent to
        the same user within duplicate_check_interval (default 1800 s) is accepted but not delivered."""
        if send.duplicate_check:
            interval = send.body.get("duplicate_check_interval", 1800)
            with self.lock:
                send.dropped = any(
                    s.api == "wecom" and not s.dropped and s.to == send.to and s.text == send.text
                    and send.at - s.at <= interval for s in self.sends
                )
        self.record(send)


# ---------------------------------------------------------------- the bridge process


class Bridge:
    """`wxbridge dev --aws`, started, SIGKILLed (its whole process group) and restarted."""

    def __init__(self, binary: str, args: list[str], env: dict, log_path: Path, url: str, log: Log):
        self.binary, self.args, self.env, self.url, self.log = binary, args, env, url, log
        self.log_file = log_path.open("a", encoding="utf-8")
        self.log_lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.incarnation = 0
        self.incarnations: list[dict] = []  # {"n", "started", "ready", "killed"}

    def start(self) -> None:
        self.incarnation += 1
        n = self.incarnation
        self.proc = subprocess.Popen(
            [self.binary, *self.args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.incarnations.append({"n": n, "pid": self.proc.pid, "started": now(), "ready": None, "killed": None})
        self.log.event(f"bridge #{n} started (pid {self.proc.pid})")
        threading.Thread(target=self._pump, args=(self.proc, n), daemon=True).start()

    def _pump(self, proc: subprocess.Popen, n: int) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.log_lock:
                self.log_file.write(f"[{now():8.3f} #{n}] {line}\n")
                self.log_file.flush()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"bridge #{self.incarnation} exited with {self.proc.returncode} (see dev.log)")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=1) as response:
                    if response.status == 200:
                        self.incarnations[-1]["ready"] = now()
                        self.log.event(f"bridge #{self.incarnation} ready")
                        return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"bridge #{self.incarnation} did not answer within {timeout:.0f} s (see dev.log)")

    def kill(self) -> float:
        assert self.proc is not None
        at = now()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.incarnations[-1]["killed"] = at
        self.log.event(f"bridge #{self.incarnation} SIGKILLed", show=True)
        return at

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()


# ---------------------------------------------------------------- WeChat's side: callbacks


@dataclass
class Message:
    n: int
    channel: str  # "wecom" | "oa"
    user: str
    text: str
    msg_id: int
    due: float
    deliveries: list[dict] = field(default_factory=list)  # {"at", "status", "ms", "note"}
    acked_at: float | None = None
    passive: list[tuple[float, str]] = field(default_factory=list)  # passive replies WeChat got
    done: bool = False

    @property
    def id(self) -> str:
        return f"{self.channel}:{WECOM['app'] if self.channel == 'wecom' else OA['app']}:{self.msg_id}"


def post(url: str, body: str, timeout: float) -> tuple[int | None, str, float, str]:
    """One delivery as WeChat makes it: (status or None, body, seconds, note)."""
    started = time.monotonic()
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("POST", f"{parts.path}?{parts.query}", body=body.encode(), headers={"Content-Type": "text/xml"})
        response = conn.getresponse()
        data = response.read().decode("utf-8", "replace")
        elapsed = time.monotonic() - started
        if elapsed > timeout:
            return None, "", elapsed, "answered after WeChat's 5 s"
        return response.status, data, elapsed, ""
    except socket.timeout:
        return None, "", time.monotonic() - started, "timeout (5 s)"
    except ConnectionRefusedError:
        return None, "", time.monotonic() - started, "connection refused"
    except (OSError, http.client.HTTPException) as err:
        return None, "", time.monotonic() - started, f"{type(err).__name__}"
    finally:
        conn.close()


def cdata(name: str, value: str) -> str:
    return f"<{name}><![CDATA[{value}]]></{name}>"


def element(xml: str, name: str) -> str:
    match = re.search(rf"<{name}>(?:<!\[CDATA\[(.*?)\]\]>|([^<]*))</{name}>", xml, re.S)
    return (match.group(1) if match.group(1) is not None else match.group(2)) if match else ""


class Wechat:
    """Delivers callbacks as WeChat does, re-delivering until one is answered with 200."""

    def __init__(self, base: str, rng: random.Random, log: Log):
        self.base, self.rng, self.log = base, rng, log
        self.rng_lock = threading.Lock()
        self.wecom = MsgCrypt(WECOM["token"], WECOM["encoding_aes_key"], WECOM["corp_id"])
        self.oa = MsgCrypt(OA["token"], OA["encoding_aes_key"], OA["app_id"])

    def random16(self) -> bytes:
        with self.rng_lock:
            return bytes(self.rng.getrandbits(8) for _ in range(16))

    def nonce(self) -> str:
        with self.rng_lock:
            return str(self.rng.randrange(10**9, 10**10))

    def deliver(self, m: Message) -> None:
        try:
            if m.channel == "wecom":
                self.deliver_wecom(m)
            else:
                self.deliver_oa(m)
        except Exception as err:  # a bug here must not hang the run
            self.log.event(f"{m.id}: delivery thread failed: {err!r}", show=True)
        finally:
            m.done = True

    def deliver_wecom(self, m: Message) -> None:
        created = int(time.time())
        xml = (
            "<xml>" + cdata("ToUserName", WECOM["corp_id"]) + cdata("FromUserName", m.user)
            + f"<CreateTime>{created}</CreateTime>" + cdata("MsgType", "text") + cdata("Content", m.text)
            + f"<MsgId>{m.msg_id}</MsgId><AgentID>{WECOM['agent_id']}</AgentID></xml>"
        )
        for delivery in range(1, WECOM_DELIVERIES + 1):
            ts, nonce = str(int(time.time())), self.nonce()
            encrypt = self.wecom.encrypt(xml, self.random16())
            query = f"msg_signature={self.wecom.signature(ts, nonce, encrypt)}&timestamp={ts}&nonce={nonce}"
            body = "<xml>" + cdata("ToUserName", WECOM["corp_id"]) + cdata("Encrypt", encrypt) + cdata("AgentID", str(WECOM["agent_id"])) + "</xml>"
            at = now()
            status, _, elapsed, note = post(f"{self.base}/wecom/{WECOM['app']}?{query}", body, WECHAT_WAIT)
            m.deliveries.append({"at": at, "status": status, "ms": round(elapsed * 1000), "note": note})
            self.log.event(f"{m.id} wecom delivery {delivery}: {status or note} in {elapsed * 1000:.0f} ms")
            if status == 200:
                m.acked_at = now()
                return
            time.sleep(WECOM_RETRY_GAP)

    def deliver_oa(self, m: Message) -> None:
        xml = (
            "<xml>" + cdata("ToUserName", f"gh_{OA['app']}") + cdata("FromUserName", m.user)
            + f"<CreateTime>{int(time.time())}</CreateTime>" + cdata("MsgType", "text") + cdata("Content", m.text)
            + f"<MsgId>{m.msg_id}</MsgId></xml>"
        )
        first = time.monotonic()
        for delivery in range(1, OA_DELIVERIES + 1):
            # WeChat's deliveries come every 5 s, however fast the previous one failed.
            wait = first + WECHAT_WAIT * (delivery - 1) - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            ts, nonce = str(int(time.time())), self.nonce()
            encrypt = self.oa.encrypt(xml, self.random16())
            query = (
                f"signature={plain_signature(OA['token'], ts, nonce)}&timestamp={ts}&nonce={nonce}&openid={m.user}"
                f"&encrypt_type=aes&msg_signature={self.oa.signature(ts, nonce, encrypt)}"
            )
            body = "<xml>" + cdata("ToUserName", f"gh_{OA['app']}") + cdata("Encrypt", encrypt) + "</xml>"
            at = now()
            status, answer, elapsed, note = post(f"{self.base}/oa/{OA['app']}?{query}", body, WECHAT_WAIT)
            reply = None
            if status == 200 and answer.strip() not in ("", "success"):
                reply, problem = self.open_passive(answer)
                if problem:
                    note = f"unreadable passive reply: {problem}"
                    self.log.event(f"{m.id}: {note}", show=True)
            m.deliveries.append({"at": at, "status": status, "ms": round(elapsed * 1000), "note": note, "reply": reply})
            what = f"passive reply {reply!r}" if reply is not None else (answer.strip() if status == 200 else "")
            self.log.event(f"{m.id} oa delivery {delivery}: {status or note} in {elapsed * 1000:.0f} ms {what}")
            if status == 200:
                m.acked_at = now()
                if reply is not None:
                    m.passive.append((now(), reply))
                return

    def open_passive(self, body: str) -> tuple[str | None, str]:
        encrypt = element(body, "Encrypt")
        if not encrypt:
            return None, "no Encrypt"
        signature, ts, nonce = element(body, "MsgSignature"), element(body, "TimeStamp"), element(body, "Nonce")
        if self.oa.signature(ts, nonce, encrypt) != signature:
            return None, "signature mismatch"
        try:
            xml = self.oa.decrypt(encrypt)
        except ValueError as err:
            return None, str(err)
        if element(xml, "MsgType") != "text":
            return None, f"msgtype {element(xml, 'MsgType')}"
        return element(xml, "Content"), ""


# ---------------------------------------------------------------- the run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def emulator_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1):
            return True
    except (OSError, http.client.HTTPException):
        return False


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/kill-test",
        description="Run `wxbridge dev --aws` under WeCom + Official Account traffic, SIGKILL and restart it, "
        "and check every acknowledged message is answered exactly once and the DLQs stay empty.",
    )
    p.add_argument("--messages", type=int, default=30, help="callbacks to send (default 30)")
    p.add_argument("--kills", type=int, default=3, help="SIGKILLs during the run (default 3)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock, printed)")
    p.add_argument("--traffic-seconds", type=float, default=None, help="spread the messages over this long (default messages/2)")
    p.add_argument("--oa-share", type=float, default=0.33, help="share of Official Account messages (default 0.33)")
    p.add_argument("--users", type=int, default=5, help="users per channel (default 5)")
    p.add_argument("--visibility", type=int, default=10, help="visibility timeout of the test's queues, s (default 10)")
    p.add_argument("--max-receives", type=int, default=8, help="receives before a queue's DLQ (default 8)")
    p.add_argument("--downtime", type=float, default=2.0, help="longest pause between a kill and the restart, s (default 2)")
    p.add_argument("--kill-tail", type=float, default=8.0, help="kills may also fall this long after the traffic, s (default 8)")
    p.add_argument("--api-delay", type=float, default=0.0,
                   help="seconds the fake WeChat takes per send (widens the window between a send and its record; default 0)")
    p.add_argument("--drain-timeout", type=float, default=240.0, help="longest wait for the queues to drain, s (default 240)")
    p.add_argument("--emulator-port", type=int, default=int(os.environ.get("WXBRIDGE_KILLTEST_PORT", "4591")))
    p.add_argument("--workdir", type=Path, default=None, help="logs and results (default /tmp/wxbridge-kill-test-<seed>-<pid>)")
    p.add_argument("--keep", action="store_true", help="keep the test's table and queues on the emulator")
    p.add_argument("--verbose", "-v", action="store_true", help="print every delivery and send")
    args = p.parse_args(argv)
    if args.seed is None:
        args.seed = int(time.time()) % 100000
    if args.traffic_seconds is None:
        args.traffic_seconds = max(args.messages / 2.0, 1.0)
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    binary = os.environ.get("WXBRIDGE_BIN") or str(ROOT / "target/debug/wxbridge")
    if not os.access(binary, os.X_OK):
        print(f"kill-test: no wxbridge binary at {binary} (build it or set WXBRIDGE_BIN)", file=sys.stderr)
        return 2
    work = args.workdir or Path(f"/tmp/wxbridge-kill-test-{args.seed}-{os.getpid()}")
    work.mkdir(parents=True, exist_ok=True)
    log = Log(work / "events.log", args.verbose)
    print(f"kill-test: seed {args.seed}, {args.messages} messages over {args.traffic_seconds:.0f} s, {args.kills} kills; "
          f"binary {binary}; logs in {work}", flush=True)

    # The emulator, on a port of its own.
    port = args.emulator_port
    started_emulator = False
    if not emulator_answers(port):
        env = dict(os.environ, WXBRIDGE_LOCAL_PORT=str(port))
        subprocess.run([str(ROOT / "infra/local-stack.sh"), "start"], env=env, check=True)
        started_emulator = True
    endpoint = f"http://127.0.0.1:{port}"
    aws = Aws(endpoint)

    # The test's own table and queues: short visibility timeout, few receives before the DLQ.
    prefix = f"wxkt-{args.seed}-{os.getpid()}"
    table = f"{prefix}-table"
    aws.create_table(table)
    queue_attrs = {"VisibilityTimeout": str(args.visibility), "MessageRetentionPeriod": "345600"}
    # The inbound queue is FIFO (a group per conversation, deduplicated by Inbound id), and so
    # is its DLQ, as in the template.
    fifo = {"FifoQueue": "true"}
    high_throughput = dict(fifo, DeduplicationScope="messageGroup", FifoThroughputLimit="perMessageGroupId")
    inbound_dlq = aws.create_queue(f"{prefix}-inbound-dlq.fifo", dict(fifo, MessageRetentionPeriod="1209600"))
    outbound_dlq = aws.create_queue(f"{prefix}-outbound-dlq", {"MessageRetentionPeriod": "1209600"})

    def redrive(dlq: str) -> str:
        return json.dumps({"deadLetterTargetArn": aws.queue_arn(dlq), "maxReceiveCount": str(args.max_receives)})

    inbound = aws.create_queue(
        f"{prefix}-inbound.fifo", dict(queue_attrs, **high_throughput, RedrivePolicy=redrive(inbound_dlq))
    )
    outbound = aws.create_queue(f"{prefix}-outbound", dict(queue_attrs, RedrivePolicy=redrive(outbound_dlq)))
    queues = {"inbound": inbound, "outbound": outbound, "inbound-dlq": inbound_dlq, "outbound-dlq": outbound_dlq}
    log.event(f"resources: table {table}, queues {queues}")

    fake = FakeWechat(log, args.api_delay)
    config = {
        "wecom": [WECOM],
        "oa": [OA],
        "bot": {"kind": "echo"},
    }
    config_path = work / "config.json"
    config_path.write_text(json.dumps(config, indent=2))
    listen_port = free_port()
    bridge_url = f"http://127.0.0.1:{listen_port}"
    env = dict(os.environ)
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        WXBRIDGE_TABLE=table,
        WXBRIDGE_INBOUND_QUEUE_URL=inbound,
        WXBRIDGE_OUTBOUND_QUEUE_URL=outbound,
        WXBRIDGE_DLQ_URL=outbound_dlq,
        WXBRIDGE_WECOM_API_BASE=f"http://127.0.0.1:{fake.port}/wecom",
        WXBRIDGE_OA_API_BASE=f"http://127.0.0.1:{fake.port}/oa",
        RUST_LOG=os.environ.get("RUST_LOG", "info"),
        NO_COLOR="1",
    )
    env.pop("WXBRIDGE_CONFIG", None)
    env.pop("WXBRIDGE_CONFIG_SECRET", None)
    bridge = Bridge(binary, ["dev", "--aws", "--config", str(config_path), "--listen", f"127.0.0.1:{listen_port}"],
                    env, work / "dev.log", bridge_url, log)
    wechat = Wechat(bridge_url, rng, log)

    # The traffic: evenly spread with jitter, users drawn from a small pool per channel.
    messages: list[Message] = []
    step = args.traffic_seconds / max(args.messages, 1)
    for n in range(args.messages):
        channel = "oa" if rng.random() < args.oa_share else "wecom"
        user = (f"KtUser{rng.randrange(args.users):02d}" if channel == "wecom"
                else f"oKillTest{rng.randrange(args.users):018d}")
        messages.append(Message(
            n=n, channel=channel, user=user, text=f"kt{args.seed}-{n:04d} {'你好' if channel == 'oa' else 'hello'}",
            msg_id=rng.getrandbits(62) | (1 << 61), due=n * step + rng.uniform(0, step * 0.8),
        ))
    kill_window = args.traffic_seconds + args.kill_tail
    kill_offsets = sorted(rng.uniform(1.0, kill_window) for _ in range(args.kills))
    downtimes = [rng.uniform(0.2, args.downtime) for _ in range(args.kills)]

    exit_code = 2
    try:
        bridge.start()
        bridge.wait_ready()
        base = now()
        for m in messages:
            m.due += base
        kills: list[float] = []

        def traffic() -> None:
            for m in messages:
                delay = m.due - now()
                if delay > 0:
                    time.sleep(delay)
                threading.Thread(target=wechat.deliver, args=(m,), daemon=True).start()

        traffic_thread = threading.Thread(target=traffic, daemon=True)
        traffic_thread.start()
        for offset, downtime in zip(kill_offsets, downtimes):
            delay = base + offset - now()
            if delay > 0:
                time.sleep(delay)
            if bridge.incarnations[-1]["ready"] is None:
                bridge.wait_ready()
            kills.append(bridge.kill())
            time.sleep(downtime)
            bridge.start()
            bridge.wait_ready()
        traffic_thread.join()
        while not all(m.done for m in messages):
            time.sleep(0.2)
        log.event("traffic done; waiting for the queues to drain", show=True)

        # Drained: both queues empty (nothing visible, in flight or delayed) for a few seconds.
        # Then nothing can be sent any more: a message still unanswered is lost (dead-lettered,
        # or never published). Or the timeout.
        deadline = time.monotonic() + args.drain_timeout
        stable_since = None
        drained = False
        while time.monotonic() < deadline:
            counts = {k: aws.queue_counts(queues[k]) for k in ("inbound", "outbound")}
            empty = all(sum(c.values()) == 0 for c in counts.values())
            if empty:
                stable_since = stable_since or time.monotonic()
                if time.monotonic() - stable_since >= 5.0:
                    drained = True
                    break
            else:
                stable_since = None
            time.sleep(1.0)
        log.event(f"drain {'done' if drained else 'timed out'}", show=True)

        exit_code = report(args, messages, fake, kills, bridge, aws, queues, table, drained, work, log)
    finally:
        bridge.stop()
        fake.server.shutdown()
        if exit_code == 0 and not args.keep:
            aws.delete_resources(table, list(queues.values()))
        elif not started_emulator:
            print(f"kill-test: kept table {table} and queues {prefix}-* on {endpoint}")
        if started_emulator:
            subprocess.run([str(ROOT / "infra/local-stack.sh"), "stop"], env=dict(os.environ, WXBRIDGE_LOCAL_PORT=str(port)))
    return exit_code


def answers_of(m: Message, sends: list[Send]) -> list[tuple[float, str]]:
    """Every answer the user got: passive replies WeChat received and sends of the message's text."""
    api = "wecom" if m.channel == "wecom" else "oa"
    out = [(at, "passive") for at, text in m.passive if text == m.text]
    out += [(s.at, f"{api} send") for s in sends
            if s.api == api and s.to == m.user and s.text == m.text and not s.dropped]
    return sorted(out)


def report(args, messages, fake, kills, bridge, aws, queues, table, drained, work, log) -> int:
    sends = list(fake.sends)
    acked = [m for m in messages if m.acked_at is not None]
    rows = []
    failures: list[str] = []
    unanswered, duplicated, stray_passive = [], [], []
    slowest = None  # (seconds, message, kill time)
    for m in messages:
        answers = answers_of(m, sends)
        wrong = [text for _, text in m.passive if text != m.text]
        if wrong:
            stray_passive.append((m, wrong))
        if m.acked_at is not None and not answers:
            unanswered.append(m)
        if len(answers) > 1:
            duplicated.append((m, answers))
        if answers:
            first = m.deliveries[0]["at"] if m.deliveries else m.due
            answered_at = answers[0][0]
            spanned = [k for k in kills if first <= k <= answered_at]
            if spanned:
                latency = answered_at - first
                if slowest is None or latency > slowest[0]:
                    slowest = (latency, m, spanned[-1])
        rows.append(m)
    known_texts = {m.text for m in messages}
    unknown_sends = [s for s in sends if s.text not in known_texts]

    dlq = {name: aws.drain_messages(queues[name]) for name in ("inbound-dlq", "outbound-dlq")}
    counts = {name: aws.queue_counts(url) for name, url in queues.items()}
    in_dlqs = sum(len(v) for v in dlq.values())
    answered = sum(1 for m in acked if answers_of(m, sends))
    dup_count = sum(len(a) - 1 for _, a in duplicated)
    dropped = [s for s in sends if s.dropped]
    answered_unacked = sum(1 for m in messages if m.acked_at is None and answers_of(m, sends))
    by_channel = {c: sum(1 for m in messages if m.channel == c) for c in ("wecom", "oa")}

    table_rows = [
        ("messages", f"{len(messages)} (WeCom {by_channel['wecom']}, Official Account {by_channel['oa']})"),
        ("kills", f"{len(kills)} (SIGKILL, restarts {len(bridge.incarnations) - 1})"),
        ("acknowledged", f"{len(acked)} ({len(messages) - len(acked)} never acknowledged: WeChat gave up)"),
        ("answered", f"{answered} of {len(acked)} acknowledged (+{answered_unacked} answered though not acknowledged)"),
        ("duplicated", f"{dup_count} extra answers on {len(duplicated)} messages"
         + (f" (+{len(dropped)} repeats WeCom's duplicate check kept from the user)" if dropped else "")),
        ("in DLQs", f"{in_dlqs} (inbound {len(dlq['inbound-dlq'])}, outbound {len(dlq['outbound-dlq'])})"),
        ("slowest answer after a kill",
         f"{slowest[0]:.1f} s ({slowest[1].id}: first delivery +{slowest[1].deliveries[0]['at']:.1f} s, kill +{slowest[2]:.1f} s)"
         if slowest else "n/a"),
        ("queues at the end", ", ".join(f"{k} {v['visible']}+{v['invisible']} in flight" for k, v in counts.items()
                                        if k in ("inbound", "outbound")) + ("" if drained else " (drain timed out)")),
    ]
    width = max(len(k) for k, _ in table_rows)
    print()
    print(f"| {'':<{width}} | kill test, seed {args.seed} |")
    print(f"| {'-' * width} | {'-' * 40} |")
    for k, v in table_rows:
        print(f"| {k:<{width}} | {v} |")
    print()

    if unanswered:
        failures.append(f"{len(unanswered)} acknowledged messages never answered")
    if duplicated:
        failures.append(f"{len(duplicated)} messages answered more than once")
    if in_dlqs:
        failures.append(f"{in_dlqs} messages in the DLQs")
    if stray_passive:
        failures.append(f"{len(stray_passive)} passive replies with another message's text")
    if unknown_sends:
        failures.append(f"{len(unknown_sends)} sends of unknown text")
    if fake.refused:
        failures.append(f"{len(fake.refused)} API calls refused by the fake WeChat")

    # What the run leaves for a diagnosis.
    details = {
        "seed": args.seed,
        "kills": kills,
        "incarnations": bridge.incarnations,
        "queues": queues,
        "table": table,
        "queue_counts": counts,
        "dlq": dlq,
        "refused": fake.refused,
        "messages": [
            {"n": m.n, "id": m.id, "channel": m.channel, "user": m.user, "text": m.text, "acked_at": m.acked_at,
             "deliveries": m.deliveries, "answers": answers_of(m, sends)}
            for m in messages
        ],
    }
    (work / "result.json").write_text(json.dumps(details, indent=1, ensure_ascii=False, default=str))

    problem_messages = [(m, "never answered") for m in unanswered] + [(m, "answered more than once") for m, _ in duplicated]
    for m, why in problem_messages:
        print(f"✗ {m.id} ({m.channel}, {m.user}, {m.text!r}): {why}")
        print(f"  deliveries: " + "; ".join(
            f"+{d['at']:.2f} {d['status'] or d['note']} ({d['ms']} ms)" for d in m.deliveries))
        print(f"  acknowledged: {f'+{m.acked_at:.2f}' if m.acked_at else 'no'}; answers: "
              + (", ".join(f"+{at:.2f} {via}" for at, via in answers_of(m, sends)) or "none"))
        near = [f"+{k:.2f}" for k in kills if m.deliveries and m.deliveries[0]["at"] - 2 <= k]
        print(f"  kills from its first delivery on: {', '.join(near) or 'none'}")
        key_channel = "wecom_app" if m.channel == "wecom" else "oa"
        for pk in (f"seen#{m.id}", f"slot#{m.id}", f"sent:{key_channel}:kt:{m.id}#0"):
            try:
                item = aws.get_item(table, pk)
            except RuntimeError as err:
                item = f"({err})"
            if isinstance(item, dict) and "lease_until" in item:
                left = int(item["lease_until"]) / 1000 - time.time()
                item["lease_until"] = f"{item['lease_until']} ({'expired' if left < 0 else f'{left:.0f} s left'})"
            print(f"  {pk}: {item}")
        for name, entries in dlq.items():
            for entry in entries:
                if m.id in entry.get("Body", "") or str(m.msg_id) in entry.get("Body", ""):
                    attrs = {k: v.get("StringValue") for k, v in entry.get("MessageAttributes", {}).items()}
                    print(f"  in {name}: message {entry['MessageId']}, receives "
                          f"{entry.get('Attributes', {}).get('ApproximateReceiveCount')}, attributes {attrs}")
    dev_log = (work / "dev.log").read_text(encoding="utf-8", errors="replace")
    for name, entries in dlq.items():
        for entry in entries:
            attrs = {k: v.get("StringValue") for k, v in entry.get("MessageAttributes", {}).items()}
            system = entry.get("Attributes", {})
            sent = int(system.get("SentTimestamp", 0)) / 1000 - WALL0
            mentions = [line for line in dev_log.splitlines() if entry["MessageId"] in line]
            print(f"  {name}: {entry['MessageId']} put there by "
                  + ("the sender (dead_letter)" if "reason" in attrs else f"SQS's redrive (no reason attribute), ")
                  + f"queued at +{sent:.1f} s, {system.get('ApproximateReceiveCount')} receives, attributes {attrs}")
            print(f"    body {entry.get('Body', '')[:200]}")
            if mentions:
                print(f"    dev log lines naming it ({len(mentions)}):")
                for line in mentions[-6:]:
                    print(f"      {line[:220]}")
            else:
                print("    no dev log line names it: no live consumer ever handled it (every receive went to a "
                      "receive call nobody was waiting for any more)")
    abandoned = dev_log.count("cannot read the queue")
    if abandoned:
        print(f"  dev: {abandoned} receive calls timed out client-side ('cannot read the queue ... operation timeout'), "
              "each one a long poll the emulator kept open")
    for m, wrong in stray_passive:
        print(f"✗ {m.id}: passive replies {wrong!r}")
    for s in unknown_sends[:10]:
        print(f"✗ send of unknown text to {s.to}: {s.text!r}")
    for r in fake.refused[:10]:
        print(f"✗ refused: {r}")

    if failures:
        print("kill-test: FAILED: " + "; ".join(failures) + f" (logs: {work})")
        return 1
    print(f"kill-test: passed (logs: {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
