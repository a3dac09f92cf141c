"""A small SIP toolkit for the tests: message parsing/building, SIPREC bodies (multipart SDP + RFC 7865
metadata), raw UDP/TCP exchanges and a minimal SIPREC UAC (SRC) that answers in-dialog BYE/OPTIONS."""

from __future__ import annotations

import base64
import queue
import random
import re
import select
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

COMPACT = {"v": "via", "i": "call-id", "l": "content-length", "f": "from", "t": "to", "m": "contact",
           "c": "content-type", "k": "supported", "s": "subject", "e": "content-encoding"}


def rand_token(n: int = 10) -> str:
    return "".join(random.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(n))


def new_branch() -> str:
    return "z9hG4bK" + rand_token(16)


@dataclass
class SipMessage:
    start_line: str
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes = b""

    @property
    def is_response(self) -> bool:
        return self.start_line.startswith("SIP/2.0 ")

    @property
    def status(self) -> int:
        return int(self.start_line.split(" ", 2)[1]) if self.is_response else 0

    @property
    def reason(self) -> str:
        parts = self.start_line.split(" ", 2)
        return parts[2] if len(parts) > 2 else ""

    @property
    def method(self) -> str:
        return "" if self.is_response else self.start_line.split(" ", 1)[0]

    def all(self, name: str) -> list[str]:
        name = COMPACT.get(name.lower(), name.lower())
        return [v for k, v in self.headers if COMPACT.get(k.lower(), k.lower()) == name]

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def tokens(self, name: str) -> set[str]:
        """Comma-separated tokens of every instance of a header, lower-cased."""
        out = set()
        for v in self.all(name):
            out.update(t.strip().lower() for t in v.split(",") if t.strip())
        return out

    @property
    def cseq(self) -> tuple[int, str]:
        num, method = (self.header("CSeq") or "0 NONE").split()
        return int(num), method.upper()

    def __str__(self) -> str:
        return self.raw.decode(errors="replace") if self.raw else self.start_line


def parse_message(data: bytes) -> SipMessage:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    lines = head.decode("utf-8", errors="replace").replace("\r\n", "\n").split("\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # folded
            k, v = headers[-1]
            headers[-1] = (k, v + " " + line.strip())
        elif ":" in line:
            k, v = line.split(":", 1)
            headers.append((k.strip(), v.strip()))
    msg = SipMessage(lines[0].strip(), headers, body, data)
    length = msg.header("Content-Length")
    if length is not None and length.strip().isdigit():
        msg.body = body[:int(length)]
    return msg


def build_message(start_line: str, headers: list[tuple[str, str]], body: bytes = b"",
                  content_length: bool = True) -> bytes:
    lines = [start_line] + [f"{k}: {v}" for k, v in headers]
    if content_length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class StreamFramer:
    """Splits a TCP byte stream into SIP messages by Content-Length."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[SipMessage]:
        self.buf += data
        out = []
        while True:
            self.buf = self.buf.lstrip(b"\r\n")  # keep-alive CRLFs
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return out
            head = self.buf[:end].decode(errors="replace")
            m = re.search(r"^(?:content-length|l)\s*:\s*(\d+)", head, re.I | re.M)
            n = int(m.group(1)) if m else 0
            total = end + 4 + n
            if len(self.buf) < total:
                return out
            out.append(parse_message(self.buf[:total]))
            self.buf = self.buf[total:]


# --- SIPREC bodies -------------------------------------------------------------------------------------------

@dataclass
class OfferStream:
    label: str
    port: int
    payload_types: tuple[int, ...] = (0, 8, 101)
    direction: str = "sendonly"
    rtpmaps: dict[int, str] = field(default_factory=lambda: {0: "PCMU/8000", 8: "PCMA/8000",
                                                              9: "G722/8000", 18: "G729/8000",
                                                              101: "telephone-event/8000"})
    protocol: str = "RTP/AVP"
    crypto: tuple[str, ...] = ()  # a=crypto values (SDES), in preference order


def offer_sdp(streams: list[OfferStream], ip: str = "127.0.0.1", version: int = 1,
              session_id: int | None = None) -> str:
    sid = session_id if session_id is not None else 4242
    lines = ["v=0", f"o=airlock-test {sid} {version} IN IP4 {ip}", "s=siprec-test", f"c=IN IP4 {ip}", "t=0 0"]
    for s in streams:
        lines.append(f"m=audio {s.port} {s.protocol} {' '.join(str(p) for p in s.payload_types)}")
        for pt in s.payload_types:
            if pt in s.rtpmaps:
                lines.append(f"a=rtpmap:{pt} {s.rtpmaps[pt]}")
            if s.rtpmaps.get(pt, "").startswith("telephone-event"):
                lines.append(f"a=fmtp:{pt} 0-16")
        lines.append("a=ptime:20")
        lines += [f"a=crypto:{c}" for c in s.crypto]
        lines.append(f"a=label:{s.label}")
        lines.append(f"a={s.direction}")
    return "\r\n".join(lines) + "\r\n"


def b64id() -> str:
    return base64.b64encode(uuid.uuid4().bytes).decode()


def metadata_xml(labels: list[str], names: list[tuple[str, str]] | None = None) -> str:
    """RFC 7865 metadata: one session, one participant per label who sends that label's stream and receives the
    others. `names` gives (aor, display name) per label."""
    names = names or [(f"sip:party{i + 1}@example.com", f"Party {i + 1}") for i in range(len(labels))]
    session = b64id()
    stream_ids = [b64id() for _ in labels]
    part_ids = [b64id() for _ in labels]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    x = ['<?xml version="1.0" encoding="UTF-8"?>',
         '<recording xmlns="urn:ietf:params:xml:ns:recording:1">',
         "  <datamode>complete</datamode>",
         f'  <session session_id="{session}">',
         f"    <sipSessionID>{uuid.uuid4().hex}</sipSessionID>",
         f"    <start-time>{now}</start-time>",
         "  </session>",
         f'  <sessionrecordingassoc session_id="{session}">',
         f"    <associate-time>{now}</associate-time>",
         "  </sessionrecordingassoc>"]
    for pid, (aor, display) in zip(part_ids, names):
        x += [f'  <participant participant_id="{pid}">',
              f'    <nameID aor="{aor}">',
              f'      <name xml:lang="en">{display}</name>',
              "    </nameID>",
              "  </participant>",
              f'  <participantsessionassoc participant_id="{pid}" session_id="{session}">',
              f"    <associate-time>{now}</associate-time>",
              "  </participantsessionassoc>"]
    for sid, label in zip(stream_ids, labels):
        x += [f'  <stream stream_id="{sid}" session_id="{session}">', f"    <label>{label}</label>", "  </stream>"]
    for i, pid in enumerate(part_ids):
        x.append(f'  <participantstreamassoc participant_id="{pid}">')
        x.append(f"    <send>{stream_ids[i]}</send>")
        for j, sid in enumerate(stream_ids):
            if j != i:
                x.append(f"    <recv>{sid}</recv>")
        x.append("  </participantstreamassoc>")
    x.append("</recording>")
    return "\r\n".join(x) + "\r\n"


def multipart(sdp: str, metadata: str | None, boundary: str | None = None,
              metadata_type: str = "application/rs-metadata+xml") -> tuple[str, bytes]:
    """Returns (Content-Type header value, body) of a SIPREC multipart/mixed body."""
    boundary = boundary or ("uniqueBoundary" + rand_token(8))
    parts = [f"--{boundary}\r\nContent-Type: application/sdp\r\n\r\n{sdp}"]
    if metadata is not None:
        parts.append(f"--{boundary}\r\nContent-Type: {metadata_type}\r\n"
                     f"Content-Disposition: recording-session\r\n\r\n{metadata}")
    body = "\r\n".join(parts) + f"\r\n--{boundary}--\r\n"
    return f"multipart/mixed;boundary={boundary}", body.encode()


@dataclass
class AnswerMedia:
    port: int
    proto: str
    payload_types: list[int]
    label: str | None
    direction: str | None
    rtpmaps: dict[int, str]
    connection: str | None
    crypto: list[str] = field(default_factory=list)


def parse_sdp(text: str) -> tuple[str | None, list[AnswerMedia]]:
    """(session-level c= address, media sections)"""
    session_c = None
    media: list[AnswerMedia] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        line = line.strip()
        if line.startswith("m="):
            f = line[2:].split()
            media.append(AnswerMedia(int(f[1]), f[2], [int(p) for p in f[3:] if p.isdigit()], None, None, {}, None))
        elif line.startswith("c="):
            addr = line.split()[-1]
            if media:
                media[-1].connection = addr
            else:
                session_c = addr
        elif line.startswith("a=") and media:
            attr = line[2:]
            if attr.startswith("label:"):
                media[-1].label = attr[6:].strip()
            elif attr in ("sendonly", "recvonly", "sendrecv", "inactive"):
                media[-1].direction = attr
            elif attr.startswith("rtpmap:"):
                pt, enc = attr[7:].split(None, 1)
                media[-1].rtpmaps[int(pt)] = enc
            elif attr.startswith("crypto:"):
                media[-1].crypto.append(attr[7:])
    return session_c, media


# --- raw exchanges --------------------------------------------------------------------------------------------

def udp_exchange(server: tuple[str, int], data: bytes, timeout: float = 3.0, until_final: bool = True,
                 sock: socket.socket | None = None) -> list[SipMessage]:
    """Sends one datagram and collects the responses (until a final one, or the timeout)."""
    own = sock is None
    if own:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
    try:
        sock.sendto(data, server)
        return _collect(lambda t: _udp_recv(sock, t), timeout, until_final)
    finally:
        if own:
            sock.close()


def _udp_recv(sock: socket.socket, t: float) -> list[SipMessage]:
    sock.settimeout(t)
    try:
        data, _ = sock.recvfrom(65535)
    except socket.timeout:
        return []
    return [parse_message(data)]


def tcp_exchange(server: tuple[str, int], data: bytes, timeout: float = 3.0,
                 until_final: bool = True) -> list[SipMessage]:
    with socket.create_connection(server, timeout=timeout) as sock:
        sock.sendall(data)
        framer = StreamFramer()

        def recv(t: float) -> list[SipMessage]:
            sock.settimeout(t)
            try:
                chunk = sock.recv(65535)
            except socket.timeout:
                return []
            if not chunk:
                raise EOFError
            return framer.feed(chunk)

        return _collect(recv, timeout, until_final)


def _collect(recv, timeout: float, until_final: bool) -> list[SipMessage]:
    out: list[SipMessage] = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            msgs = recv(min(left, 0.2))
        except EOFError:
            break
        for m in msgs:
            out.append(m)
            if until_final and m.is_response and m.status >= 200:
                return out
    return out


def request(method: str, server: tuple[str, int], transport: str = "UDP", local_port: int = 5999,
            body: bytes = b"", content_type: str | None = None, extra: list[tuple[str, str]] | None = None,
            call_id: str | None = None, cseq: int = 1, contact_params: str = ";+sip.src",
            content_length: bool = True) -> bytes:
    """A stand-alone out-of-dialog request (for edge-case tests)."""
    host, port = server
    headers = [("Via", f"SIP/2.0/{transport} 127.0.0.1:{local_port};branch={new_branch()};rport"),
               ("Max-Forwards", "70"),
               ("From", f"<sip:src@127.0.0.1>;tag={rand_token()}"),
               ("To", f"<sip:srs@{host}:{port}>"),
               ("Call-ID", call_id or f"{rand_token(20)}@airlock-test"),
               ("CSeq", f"{cseq} {method}"),
               ("Contact", f"<sip:src@127.0.0.1:{local_port};transport={transport.lower()}>{contact_params}")]
    headers += extra or []
    if content_type:
        headers.append(("Content-Type", content_type))
    return build_message(f"{method} sip:srs@{host}:{port} SIP/2.0", headers, body, content_length)


def siprec_headers() -> list[tuple[str, str]]:
    return [("Require", "siprec"),
            ("Accept", "application/sdp, application/rs-metadata+xml, application/rs-metadata-request"),
            ("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE")]


# --- a minimal SIPREC UAC -----------------------------------------------------------------------------------

class SipUac:
    """One SIPREC dialog from the SRC side over UDP, TCP or TLS (pass `tls_context`, an `ssl.SSLContext`). A
    reader thread queues responses and answers the SRS's own requests (BYE, OPTIONS, ...) with 200, keeping
    them in `server_requests`."""

    def __init__(self, server: tuple[str, int], transport: str = "UDP", local_ip: str = "127.0.0.1",
                 tls_context=None) -> None:
        self.server = server
        self.transport = transport.upper()
        self.call_id = f"{rand_token(20)}@airlock-test"
        self.from_tag = rand_token()
        self.to_tag: str | None = None
        self.remote_target = f"sip:srs@{server[0]}:{server[1]}"
        self.cseq = 0
        self.responses: "queue.Queue[SipMessage]" = queue.Queue()
        self.server_requests: list[SipMessage] = []
        self._server_request_event = threading.Condition()
        self.last_ack: bytes | None = None
        self.last_invite_cseq = 0
        self._closed = threading.Event()
        self._io_lock = threading.Lock()
        if self.transport == "UDP":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((local_ip, 0))
        elif self.transport == "TLS":
            raw = socket.create_connection(server, timeout=5, source_address=(local_ip, 0))
            self.sock = tls_context.wrap_socket(raw, server_hostname="localhost")
        else:
            self.sock = socket.create_connection(server, timeout=5, source_address=(local_ip, 0))
        self.local_port = self.sock.getsockname()[1]
        self._reader = threading.Thread(target=self._read_loop, daemon=True, name="sip-uac")
        self._reader.start()

    def server_certificate(self) -> dict:
        """The TLS server's certificate, read under the I/O lock: the reader thread may be inside the SSL object
        (e.g. taking in a TLS 1.3 session ticket), during which it reports the handshake as unfinished."""
        with self._io_lock:
            return self.sock.getpeercert() or {}

    # transport
    def send(self, data: bytes) -> None:
        if self.transport == "UDP":
            self.sock.sendto(data, self.server)
        else:
            with self._io_lock:  # an SSL socket must not be read and written at once from two threads
                self.sock.sendall(data)

    def _read_loop(self) -> None:
        framer = StreamFramer()
        self.sock.settimeout(0.2)
        while not self._closed.is_set():
            try:
                if self.transport == "UDP":
                    data, _ = self.sock.recvfrom(65535)
                    msgs = [parse_message(data)]
                else:
                    if self.transport == "TLS" and not self.sock.pending():
                        if not select.select([self.sock], [], [], 0.2)[0]:
                            continue
                    with self._io_lock:
                        data = self.sock.recv(65535)
                    if not data:
                        return
                    msgs = framer.feed(data)
            except socket.timeout:
                continue
            except (OSError, ValueError):  # closed under us
                return
            for m in msgs:
                self._dispatch(m)

    def _dispatch(self, m: SipMessage) -> None:
        if m.is_response:
            num, method = m.cseq
            if method == "INVITE" and 200 <= m.status < 300 and self.last_ack and num == self.last_invite_cseq \
                    and self._acked_cseq == num:
                self.send(self.last_ack)  # 2xx retransmission: ACK again
                return
            self.responses.put(m)
            return
        if m.method != "ACK":
            self.send(self.response_to(m, 200, "OK"))
        with self._server_request_event:
            self.server_requests.append(m)
            self._server_request_event.notify_all()

    _acked_cseq = -1

    def response_to(self, req: SipMessage, status: int, reason: str) -> bytes:
        headers = [("Via", v) for v in req.all("Via")]
        to = req.header("To") or ""
        if ";tag=" not in to:
            to += f";tag={self.from_tag}"
        headers += [("From", req.header("From") or ""), ("To", to), ("Call-ID", req.header("Call-ID") or ""),
                    ("CSeq", req.header("CSeq") or "")]
        return build_message(f"SIP/2.0 {status} {reason}", headers)

    def wait_request(self, method: str, timeout: float) -> SipMessage | None:
        deadline = time.monotonic() + timeout
        with self._server_request_event:
            while True:
                for r in self.server_requests:
                    if r.method == method:
                        return r
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._server_request_event.wait(left)

    # requests
    def _headers(self, method: str, cseq: int, branch: str | None = None) -> list[tuple[str, str]]:
        to = f"<sip:srs@{self.server[0]}:{self.server[1]}>" + (f";tag={self.to_tag}" if self.to_tag else "")
        return [("Via", f"SIP/2.0/{self.transport} 127.0.0.1:{self.local_port};branch={branch or new_branch()};rport"),
                ("Max-Forwards", "70"),
                ("From", f"<sip:src@127.0.0.1>;tag={self.from_tag}"),
                ("To", to),
                ("Call-ID", self.call_id),
                ("CSeq", f"{cseq} {method}"),
                ("Contact", f"<sip:src@127.0.0.1:{self.local_port};transport={self.transport.lower()}>;+sip.src")]

    def wait_response(self, cseq: int, method: str, timeout: float = 5.0) -> tuple[SipMessage, list[SipMessage]]:
        """(final response, provisional responses) for the request with this CSeq."""
        provisional: list[SipMessage] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                m = self.responses.get(timeout=left)
            except queue.Empty:
                break
            if m.cseq != (cseq, method):
                continue
            if m.status < 200:
                provisional.append(m)
                continue
            return m, provisional
        raise AssertionError(f"no final response to {method} (CSeq {cseq}) within {timeout}s")

    def invite(self, body: bytes, content_type: str, extra: list[tuple[str, str]] | None = None,
               timeout: float = 5.0, siprec: bool = True) -> tuple[SipMessage, list[SipMessage]]:
        """Sends the INVITE (initial or re-INVITE), ACKs the final response, returns (final, provisionals)."""
        self.cseq += 1
        cseq = self.cseq
        branch = new_branch()
        uri = self.remote_target
        headers = self._headers("INVITE", cseq, branch) + (siprec_headers() if siprec else []) + (extra or [])
        headers.append(("Content-Type", content_type))
        self.last_invite_cseq = cseq
        self.send(build_message(f"INVITE {uri} SIP/2.0", headers, body))
        final, prov = self.wait_response(cseq, "INVITE", timeout)
        if 200 <= final.status < 300:
            if self.to_tag is None:
                to = final.header("To") or ""
                m = re.search(r";\s*tag=([^;>\s]+)", to)
                self.to_tag = m.group(1) if m else None
                contact = final.header("Contact") or ""
                m = re.search(r"<([^>]+)>", contact)
                if m:
                    self.remote_target = m.group(1)
            ack_headers = self._headers("ACK", cseq)
            self.last_ack = build_message(f"ACK {self.remote_target} SIP/2.0", ack_headers)
            self._acked_cseq = cseq
            self.send(self.last_ack)
        else:
            # non-2xx: ACK belongs to the INVITE transaction (same branch, To from the response)
            headers = self._headers("ACK", cseq, branch)
            headers = [(k, final.header("To") or v) if k == "To" else (k, v) for k, v in headers]
            self.send(build_message(f"ACK {uri} SIP/2.0", headers))
        return final, prov

    def in_dialog(self, method: str, body: bytes = b"", content_type: str | None = None,
                  timeout: float = 5.0) -> SipMessage:
        self.cseq += 1
        headers = self._headers(method, self.cseq)
        if content_type:
            headers.append(("Content-Type", content_type))
        self.send(build_message(f"{method} {self.remote_target} SIP/2.0", headers, body))
        final, _ = self.wait_response(self.cseq, method, timeout)
        return final

    def bye(self, timeout: float = 5.0) -> SipMessage:
        return self.in_dialog("BYE", timeout=timeout)

    def close(self) -> None:
        self._closed.set()
        try:
            self.sock.close()
        except OSError:
            pass
        self._reader.join(1)


def siprec_body(labels: list[str], ports: list[int], payload_types: tuple[int, ...] = (0, 8, 101),
                direction: str = "sendonly", version: int = 1, metadata: bool = True,
                metadata_padding: int = 0, crypto: dict[str, str] | None = None) -> tuple[str, bytes]:
    """(Content-Type, body) of a SIPREC offer: one m-line per label, RFC 7865 metadata naming the labels.
    `metadata_padding` adds that many bytes of foreign-namespace extension data (to make large INVITEs).
    `crypto` (label -> a=crypto value) makes every stream RTP/SAVP with that SDES key."""
    sdp = offer_sdp([OfferStream(label, port, payload_types, direction,
                                 protocol="RTP/SAVP" if crypto else "RTP/AVP",
                                 crypto=(crypto[label],) if crypto else ())
                     for label, port in zip(labels, ports)], version=version)
    meta = metadata_xml(labels) if metadata else None
    if meta is not None and metadata_padding:
        filler = "".join(f'  <x:note xmlns:x="urn:example:airlock-test:1" n="{i}">' + "padding " * 8 + "</x:note>\r\n"
                         for i in range(metadata_padding // 100 + 1))
        meta = meta.replace("</recording>", filler + "</recording>")
    return multipart(sdp, meta)


def check_siprec_answer(resp: SipMessage, labels: list[str]) -> dict[str, AnswerMedia]:
    """Asserts the SRS's 200 OK shape (RFC 7866): +sip.srs Contact, SDP-only body, one recvonly m-line per offered
    m-line in the same order, labels echoed. Returns the answer's media by label."""
    assert resp.status == 200, str(resp)
    contact = resp.header("Contact") or ""
    assert "+sip.srs" in contact, f"Contact lacks +sip.srs: {contact!r}"
    ctype = (resp.header("Content-Type") or "").split(";")[0].strip().lower()
    assert ctype == "application/sdp", f"200 OK body must be plain SDP, got {ctype!r}"
    _session_c, media = parse_sdp(resp.body.decode())
    assert [m.label for m in media] == labels, f"labels not echoed in order: {[m.label for m in media]} vs {labels}"
    for m in media:
        assert m.port > 0, f"stream {m.label} rejected (port 0)"
        assert m.direction == "recvonly", f"stream {m.label} answered {m.direction!r}, expected recvonly"
    return {m.label: m for m in media}
