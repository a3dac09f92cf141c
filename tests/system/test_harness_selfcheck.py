"""Checks of the harness itself (no airlock needed): the G.711 tables agree with sox's decoder, the WAV parser
reads what sox writes, bencode round-trips, the SIPREC bodies parse back, and the S3 test servers (s3s-fs, moto)
do what the sink's tests rely on."""

from __future__ import annotations

import base64
import datetime
import hashlib
import subprocess
from array import array

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from harness import audio, g711, s3, sip, voicestream
from harness.ng import bdecode, bencode


def sox_decode(codec: str, data: bytes, tmp_path) -> array:
    sox = audio.require_tool("sox")
    src, dst = tmp_path / f"in.{codec}", tmp_path / f"out-{codec}.raw"
    src.write_bytes(data)
    enc = {"PCMU": "mu-law", "PCMA": "a-law"}[codec]
    subprocess.run([sox, "-q", "-t", "raw", "-r", "8000", "-c", "1", "-e", enc, "-b", "8", str(src),
                    "-t", "raw", "-e", "signed-integer", "-b", "16", "-L", str(dst)], check=True)
    out = array("h")
    out.frombytes(dst.read_bytes())
    return out


def test_g711_tables_match_sox(tmp_path):
    every_code = bytes(range(256))
    for codec in ("PCMU", "PCMA"):
        assert g711.decode(every_code, codec) == sox_decode(codec, every_code, tmp_path), codec
    assert g711.decode(bytes([g711.silence_byte("PCMU")]), "PCMU")[0] == 0
    assert abs(g711.decode(bytes([g711.silence_byte("PCMA")]), "PCMA")[0]) <= 8


def test_wav_parser_reads_sox_output(tmp_path):
    sox = audio.require_tool("sox")
    path = tmp_path / "t.wav"
    subprocess.run([sox, "-q", "-n", "-r", "8000", "-c", "2", "-b", "16", "-e", "signed-integer", str(path),
                    "synth", "0.5", "sine", "440", "sine", "660"], check=True)
    wav = audio.parse_wav(path.read_bytes())
    assert (wav.sample_rate, wav.channels, wav.bits, wav.frames) == (8000, 2, 16, 4000)
    assert wav.channel(0) != wav.channel(1)


def test_exact_run_search():
    hay = array("h", [0] * 5 + [1, -2, 3, 256, -256] + [0] * 3)
    assert audio.find_run(hay, array("h", [1, -2, 3, 256, -256])) == 5
    assert audio.find_run(hay, array("h", [256, 1])) == -1
    audio.assert_exact_run(hay, array("h", [1, -2, 3, 256, -256]), "t")
    assert audio.longest_prefix_run(hay, array("h", [1, -2, 3, 7]), probe=2) == (5, 3)


def test_bencode_round_trip():
    doc = {"command": "offer", "flags": ["all", "SIPREC"], "n": 3, "nested": {"x": [1, "y"]}}
    assert bdecode(bencode(doc)) == doc


def test_siprec_body_parses_back():
    ctype, body = sip.siprec_body(["2", "1"], [4000, 4002])
    assert ctype.startswith("multipart/mixed;boundary=")
    boundary = ctype.split("=", 1)[1]
    parts = body.split(f"--{boundary}".encode())
    assert len(parts) == 4 and parts[-1].startswith(b"--")
    _c, media = sip.parse_sdp(parts[1].split(b"\r\n\r\n", 1)[1].decode())
    assert [(m.label, m.port, m.direction) for m in media] == [("2", 4000, "sendonly"), ("1", 4002, "sendonly")]
    assert b"recording-session" in parts[2] and b"<label>1</label>" in parts[2]


def test_voicestream_stubs_encode_the_wire_format(vs_stubs):
    """Stubs generated from the project's voice.proto produce the reference's golden bytes."""
    pb2, pb2_grpc = vs_stubs
    start = pb2.StreamingVoiceResponse(status=pb2.StreamingStatus(code=voicestream.SRV_REQ_START_STREAMING))
    assert start.SerializeToString() == bytes.fromhex("0a0308e907")
    cfg = pb2.StreamingVoiceRequest(streaming_config=pb2.StreamingConfig(
        voice_config=pb2.VoiceConfig(encoding=pb2.VoiceConfig.LINEAR16, sample_rate_hertz=8000),
        vcc_call_id="300000000115255", call_leg=pb2.StreamingConfig.CUSTOMER))
    assert cfg.SerializeToString() == bytes.fromhex("0a1a0a05080110c03e120f333030303030303030313135323535") \
        + bytes.fromhex("3001")
    ended = pb2.StreamingVoiceRequest(streaming_status=pb2.StreamingStatus(code=voicestream.CLT_CALL_ENDED))
    assert ended.SerializeToString() == bytes.fromhex("1a020801")
    assert pb2.StreamingVoiceRequest(audio_content=b"\x01\x02\x03\x04").SerializeToString() == \
        bytes.fromhex("120401020304")
    # An undocumented status code (2001) survives a round trip (open enum).
    odd = pb2.StreamingVoiceRequest(streaming_status=pb2.StreamingStatus(code=2001))
    assert pb2.StreamingVoiceRequest.FromString(odd.SerializeToString()).streaming_status.code == 2001
    assert {v: k for k, v in voicestream.LEGS.items()} == {
        pb2.StreamingConfig.AGENT: "agent", pb2.StreamingConfig.CUSTOMER: "customer",
        pb2.StreamingConfig.SUPERVISOR: "supervisor"}
    assert hasattr(pb2_grpc, "VoiceStub")
    assert pb2.DESCRIPTOR.services_by_name["Voice"].methods_by_name["StreamingVoice"].full_name == \
        "five9.voicestream.Voice.StreamingVoice"


def test_voicestream_pcm_chunking():
    samples = array("h", [1, -2, 300, -32768, 32767] * 401)  # 2005 samples
    parts = voicestream.chunks(samples, 1600)
    assert [len(p) for p in parts] == [1600, 1600, 810]
    assert b"".join(parts)[:4] == bytes([1, 0, 0xFE, 0xFF])  # little-endian
    assert voicestream.pcm_samples(b"".join(parts)) == samples
    assert [len(p) for p in voicestream.chunks(samples, 320)] == [320] * 12 + [170]


def test_speech_pcm16_is_8khz_linear_speech(tmp_path):
    pcm = audio.speech_pcm16("Testing one two three.", tmp_path, "t16")
    assert len(pcm) % 160 == 0 and 0.8 * 8000 < len(pcm) < 4 * 8000
    # The same words as PCMU decode to nearly the same waveform (the µ-law quantisation error only).
    mu = g711.decode(audio.speech("Testing one two three.", tmp_path, "PCMU", "t8"), "PCMU")
    assert len(mu) == len(pcm)
    err = sum(abs(a - b) for a, b in zip(mu, pcm)) / len(pcm)
    peak = max(abs(s) for s in pcm)
    assert err < peak * 0.05, (err, peak)


# --- S3 test servers (harness/s3.py) ----------------------------------------------------------------------------

def _sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _status(err: ClientError) -> tuple[int, str]:
    return err.response["ResponseMetadata"]["HTTPStatusCode"], err.response["Error"]["Code"]


def _put_get_and_multipart(server: s3.S3Server | s3.MotoServer) -> str:
    """What both servers must do for the sink: checksummed create-only PUT, HEAD with metadata, 2-part multipart
    with SHA-256 part checksums. Returns the multipart upload's id."""
    c = server.client()
    server.create_bucket("recordings")
    body = b"call audio \x00\xff" * 100
    # moto records (and echoes) a given x-amz-checksum-sha256 only with x-amz-sdk-checksum-algorithm: SHA256.
    put = c.put_object(Bucket="recordings", Key="site/a/call-1.age", Body=body, IfNoneMatch="*",
                       ChecksumAlgorithm="SHA256", ChecksumSHA256=_sha256_b64(body),
                       Metadata={"sha256": hashlib.sha256(body).hexdigest()})
    assert put["ChecksumSHA256"] == _sha256_b64(body)
    with pytest.raises(ClientError) as again:
        c.put_object(Bucket="recordings", Key="site/a/call-1.age", Body=b"other", IfNoneMatch="*",
                     ChecksumSHA256=_sha256_b64(b"other"))
    assert _status(again.value) == (412, "PreconditionFailed")
    head = server.client().head_object(Bucket="recordings", Key="site/a/call-1.age", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == _sha256_b64(body)
    assert head["ContentLength"] == len(body) and head["Metadata"] == {"sha256": hashlib.sha256(body).hexdigest()}

    part1, part2 = bytes(range(256)) * (5 * 4096), b"\x5a" * (1 << 20)  # 5 MiB + 1 MiB
    mp = c.create_multipart_upload(Bucket="recordings", Key="site/a/call-2.age", ChecksumAlgorithm="SHA256",
                                   Metadata={"call": "2"})
    parts = []
    for n, data in ((1, part1), (2, part2)):
        r = c.upload_part(Bucket="recordings", Key="site/a/call-2.age", UploadId=mp["UploadId"], PartNumber=n,
                          Body=data, ChecksumSHA256=_sha256_b64(data))
        parts.append({"PartNumber": n, "ETag": r["ETag"], "ChecksumSHA256": _sha256_b64(data)})
    done = c.complete_multipart_upload(Bucket="recordings", Key="site/a/call-2.age", UploadId=mp["UploadId"],
                                       MultipartUpload={"Parts": parts}, IfNoneMatch="*")
    assert done["ETag"].endswith('-2"')
    expected = {"site/a/call-1.age": body, "site/a/call-2.age": part1 + part2}
    assert server.objects("recordings", "site/a/") == expected
    assert server.objects("recordings", "site/b/") == {}
    assert server.head("recordings", "site/a/call-2.age")["Metadata"] == {"call": "2"}
    return mp["UploadId"]


def test_s3s_fs_put_get_multipart(tmp_path, registry):
    server = s3.S3Server(tmp_path / "s3", registry).start()
    assert server.endpoint == f"http://127.0.0.1:{server.port}"
    c = server.client()
    upload = c.create_multipart_upload(Bucket=server.create_bucket("spool"), Key="x")["UploadId"]
    assert server.pending_multipart_uploads() == {upload: ("spool", "x")}
    c.upload_part(Bucket="spool", Key="x", UploadId=upload, PartNumber=1, Body=b"p")
    _put_get_and_multipart(server)
    assert server.pending_multipart_uploads() == {upload: ("spool", "x")}  # the completed one is gone
    c.abort_multipart_upload(Bucket="spool", Key="x", UploadId=upload)
    assert server.pending_multipart_uploads() == {} and server.orphan_parts() == {}
    # The object is a plain file under data/<bucket>/<key>.
    assert (server.data / "recordings" / "site" / "a" / "call-2.age").stat().st_size == 6 << 20
    # Pagination of objects().
    for i in range(3):
        c.put_object(Bucket="spool", Key=f"many/{i}", Body=bytes([i]))
    assert server.objects("spool", "many/") == {f"many/{i}": bytes([i]) for i in range(3)}
    # A restart on the same port keeps the data.
    assert server.stop() == -15  # s3s-fs has no SIGTERM handler
    server.start()
    assert server.objects("spool", "many/1") == {"many/1": b"\x01"}
    assert server.kill() == -9 and not server.alive()
    with pytest.raises(EndpointConnectionError):
        server.client(retries={"max_attempts": 1}).head_bucket(Bucket="spool")


def test_s3s_fs_refuses_a_wrong_secret(tmp_path, registry):
    server = s3.S3Server(tmp_path / "s3", registry).start()
    server.create_bucket("recordings")
    bad = server.client(secret_key="not-the-secret-key-000000")
    for call in (lambda: bad.list_objects_v2(Bucket="recordings"),
                 lambda: bad.put_object(Bucket="recordings", Key="k", Body=b"x")):
        with pytest.raises(ClientError) as err:
            call()
        assert _status(err.value) == (403, "SignatureDoesNotMatch")
    with pytest.raises(ClientError) as err:
        server.client(access_key="someone-else").list_objects_v2(Bucket="recordings")
    assert _status(err.value)[0] == 403
    assert server.objects("recordings") == {}


def test_s3s_fs_quirks_a_client_must_live_with(tmp_path, registry):
    """s3s-fs 0.14.1 behaviour that differs from AWS (see harness/s3.py); pinned so an upgrade that changes it
    shows up here."""
    server = s3.S3Server(tmp_path / "s3", registry).start()
    c = server.client(retries={"max_attempts": 1})
    server.create_bucket("recordings")
    # A PUT refused with BadDigest has already stored its body: the retry with the right checksum gets 412.
    with pytest.raises(ClientError) as err:
        c.put_object(Bucket="recordings", Key="k", Body=b"torn", IfNoneMatch="*", ChecksumSHA256=_sha256_b64(b"ok"))
    assert _status(err.value) == (400, "BadDigest")
    assert server.objects("recordings") == {"k": b"torn"}
    with pytest.raises(ClientError) as err:
        c.put_object(Bucket="recordings", Key="k", Body=b"ok", IfNoneMatch="*", ChecksumSHA256=_sha256_b64(b"ok"))
    assert _status(err.value) == (412, "PreconditionFailed")
    # Part checksums and part ETags are not checked; the multipart object reports no checksum.
    mp = c.create_multipart_upload(Bucket="recordings", Key="m", ChecksumAlgorithm="SHA256")
    r = c.upload_part(Bucket="recordings", Key="m", UploadId=mp["UploadId"], PartNumber=1, Body=b"abc",
                      ChecksumSHA256=_sha256_b64(b"not abc"))
    assert "ChecksumSHA256" not in r
    c.complete_multipart_upload(Bucket="recordings", Key="m", UploadId=mp["UploadId"], MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": '"00000000000000000000000000000000"', "ChecksumSHA256": _sha256_b64(b"x")}]})
    assert server.objects("recordings", "m") == {"m": b"abc"}
    assert "ChecksumSHA256" not in c.head_object(Bucket="recordings", Key="m", ChecksumMode="ENABLED")
    # An unknown (here: already completed) upload id is 403 AccessDenied, not 404 NoSuchUpload.
    with pytest.raises(ClientError) as err:
        c.upload_part(Bucket="recordings", Key="m", UploadId=mp["UploadId"], PartNumber=2, Body=b"d")
    assert _status(err.value) == (403, "AccessDenied")
    # CompleteMultipartUpload with If-None-Match: * onto an existing key: 412, the upload stays open.
    mp2 = c.create_multipart_upload(Bucket="recordings", Key="m")
    r = c.upload_part(Bucket="recordings", Key="m", UploadId=mp2["UploadId"], PartNumber=1, Body=b"new")
    with pytest.raises(ClientError) as err:
        c.complete_multipart_upload(Bucket="recordings", Key="m", UploadId=mp2["UploadId"], IfNoneMatch="*",
                                    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": r["ETag"]}]})
    assert _status(err.value) == (412, "PreconditionFailed")
    assert server.pending_multipart_uploads() == {mp2["UploadId"]: ("recordings", "m")}
    # A Complete refused with EntityTooSmall ends the upload (a retry gets 403) and leaves its parts behind.
    mp3 = c.create_multipart_upload(Bucket="recordings", Key="small")
    etags = [c.upload_part(Bucket="recordings", Key="small", UploadId=mp3["UploadId"], PartNumber=n,
                           Body=b"tiny")["ETag"] for n in (1, 2)]
    listing = {"Parts": [{"PartNumber": n, "ETag": etag} for n, etag in zip((1, 2), etags)]}
    for expect in ((400, "EntityTooSmall"), (403, "AccessDenied")):
        with pytest.raises(ClientError) as err:
            c.complete_multipart_upload(Bucket="recordings", Key="small", UploadId=mp3["UploadId"],
                                        MultipartUpload=listing)
        assert _status(err.value) == expect
    assert server.orphan_parts() == {mp3["UploadId"]: [1, 2]}
    assert mp3["UploadId"] not in server.pending_multipart_uploads()
    # No ListMultipartUploads.
    with pytest.raises(ClientError) as err:
        c.list_multipart_uploads(Bucket="recordings")
    assert _status(err.value) == (501, "NotImplemented")


def test_moto_put_get_multipart(tmp_path, registry):
    server = s3.MotoServer(tmp_path / "moto", registry).start()
    upload = _put_get_and_multipart(server)
    assert server.client().list_multipart_uploads(Bucket="recordings").get("Uploads", []) == []
    assert upload
    server.stop()
    assert not server.alive()


def test_moto_object_lock(tmp_path, registry):
    server = s3.MotoServer(tmp_path / "moto", registry).start()
    c = server.client()
    server.create_bucket("worm", object_lock=True)
    server.create_bucket("plain")
    until = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)).replace(microsecond=0)
    lock = {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": until, "ObjectLockLegalHoldStatus": "ON"}
    # As on AWS, a PUT with a retention period needs Content-MD5 or x-amz-sdk-checksum-algorithm; a bare
    # x-amz-checksum-sha256 is not enough.
    with pytest.raises(ClientError) as err:
        c.put_object(Bucket="worm", Key="call.age", Body=b"sealed", ChecksumSHA256=_sha256_b64(b"sealed"), **lock)
    assert _status(err.value) == (400, "MissingUploadObjectWithObjectLockHeaders")
    c.put_object(Bucket="worm", Key="call.age", Body=b"sealed", ChecksumAlgorithm="SHA256",
                 ChecksumSHA256=_sha256_b64(b"sealed"), IfNoneMatch="*", **lock)
    assert server.object_lock("worm", "call.age") == ("COMPLIANCE", until, "ON")
    c.put_object(Bucket="worm", Key="unlocked", Body=b"x")
    assert server.object_lock("worm", "unlocked") == (None, None, None)
    c.put_object(Bucket="plain", Key="k", Body=b"x")
    assert server.object_lock("plain", "k") == (None, None, None)
    # The locked version cannot be deleted.
    version = server.head("worm", "call.age")["VersionId"]
    with pytest.raises(ClientError) as err:
        c.delete_object(Bucket="worm", Key="call.age", VersionId=version)
    assert _status(err.value)[1] == "AccessDenied"
    assert server.objects("worm", "call") == {"call.age": b"sealed"}
