"""CTranslate2 Whisper model -> whisper.cpp legacy ggml file (f16), and f16 -> Q8_0 re-quantisation.

Owns the set-up-time model conversion for on-device transcription, nothing else: it reads a CTranslate2
`model.bin` (binary version 4..6, WhisperSpec, float16/float32 weights), the mel filters and tokenizer from
openai-whisper's `whisper/assets`, and writes the legacy ggml file whisper.cpp loads. Written by the project
from the format facts in shared/reference/asr.md §3d (no code taken from whisper.cpp or elsewhere).
Python 3.11 + numpy only; every output is written atomically (temp file in the target directory + rename).

    ct2_to_ggml.py convert  --ct2-dir DIR --assets DIR --out FILE     # -> ggml f16 (ftype 1)
    ct2_to_ggml.py quantize --in F16FILE --out FILE --type q8_0      # -> ggml Q8_0 (ftype 2007)
"""
import argparse
import base64
import math
import os
import re
import struct
import sys
import tempfile

import numpy as np

GGML_MAGIC = 0x67676D6C  # "ggml"
F32, F16, Q8_0 = 0, 1, 8  # ggml tensor types
FTYPE_F16, FTYPE_Q8_0 = 1, 2 * 1000 + 7  # GGML_QNT_VERSION * 1000 + GGML_FTYPE_MOSTLY_Q8_0
QK = 32  # values per Q8_0 block
CT2_DTYPES = {0: "<f4", 1: "i1", 2: "<i2", 3: "<i4", 4: "<f2"}
CT2_VERSIONS = range(4, 7)
F32_2D = {"encoder.conv1.bias", "encoder.conv2.bias", "encoder.positional_embedding", "decoder.positional_embedding"}


class ConvertError(Exception):
    pass


class Reader:
    """Little-endian cursor over a whole file that reports truncation instead of misreading."""

    def __init__(self, path):
        with open(path, "rb") as f:
            self.buf, self.pos, self.path = memoryview(f.read()), 0, path

    def take(self, n):
        if self.pos + n > len(self.buf):
            raise ConvertError(f"{self.path}: truncated file: need {n} bytes at offset {self.pos}, "
                               f"file has {len(self.buf)}")
        self.pos += n
        return self.buf[self.pos - n:self.pos]

    def unpack(self, fmt):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def string(self):  # u16 length including a trailing NUL, then the bytes
        return bytes(self.take(self.unpack("H")[0])).rstrip(b"\0").decode()

    def at_end(self):
        return self.pos == len(self.buf)


def read_ct2(path):
    """All variables of a CTranslate2 model.bin as numpy views, aliases resolved."""
    r = Reader(path)
    (version,) = r.unpack("I")
    if version not in CT2_VERSIONS:
        raise ConvertError(f"{path}: unsupported CTranslate2 binary version {version} (this reader handles 4..6)")
    spec, _revision = r.string(), r.unpack("I")
    if spec != "WhisperSpec":
        raise ConvertError(f"{path}: spec is {spec!r}, not 'WhisperSpec'")
    tensors = {}
    for _ in range(r.unpack("I")[0]):
        name = r.string()
        dims = r.unpack(f"{r.unpack('B')[0]}I")
        (code,), (nbytes,) = r.unpack("B"), r.unpack("I")
        if code not in CT2_DTYPES:
            raise ConvertError(f"{path}: variable '{name}' has unknown dtype code {code} (known: 0-4)")
        dtype = np.dtype(CT2_DTYPES[code])
        if nbytes != dtype.itemsize * math.prod(dims):
            raise ConvertError(f"{path}: variable '{name}' has {nbytes} bytes, shape {dims} needs "
                               f"{dtype.itemsize * math.prod(dims)}")
        tensors[name] = np.frombuffer(r.take(nbytes), dtype=dtype).reshape(dims)
    for _ in range(r.unpack("I")[0]):
        alias, target = r.string(), r.string()
        if target in tensors:
            tensors[alias] = tensors[target]
    if not r.at_end():
        raise ConvertError(f"{path}: {len(r.buf) - r.pos} unexpected bytes after the last alias")
    return tensors


def map_tensors(t):
    """Hyper-parameters and the (whisper.cpp name, array) list in whisper.cpp's write order (asr.md §3d)."""
    def get(name):
        if name not in t:
            raise ConvertError(f"missing tensor '{name}' in model.bin")
        return t[name]

    def layers(side):
        return len({m.group(1) for n in t if (m := re.match(rf"{side}/layer_(\d+)/", n))})

    d_audio, n_mels = get("encoder/conv1/weight").shape[:2]
    n_vocab, d_text = get("decoder/embeddings/weight").shape
    hp = [n_vocab, get("encoder/position_encodings/encodings").shape[0], d_audio,
          int(get("encoder/num_heads")), layers("encoder"), get("decoder/position_encodings/encodings").shape[0],
          d_text, int(get("decoder/num_heads")), layers("decoder"), n_mels, FTYPE_F16]
    out = []

    def linear(src, dst):
        out.extend([(dst + ".weight", get(src + "/weight")), (dst + ".bias", get(src + "/bias"))])

    def norm(src, dst):
        out.extend([(dst + ".weight", get(src + "/gamma")), (dst + ".bias", get(src + "/beta"))])

    def fused(src, dsts, d):  # row blocks of a fused projection; a key has no bias (must be zero in CT2)
        w, b = get(src + "/weight"), get(src + "/bias")
        if w.shape[0] != len(dsts) * d or b.shape != (len(dsts) * d,):
            raise ConvertError(f"'{src}' has shape {w.shape}/{b.shape}, expected {len(dsts)} x {d} rows")
        for k, dst in enumerate(dsts):
            rows = slice(k * d, (k + 1) * d)
            out.append((dst + ".weight", w[rows]))
            if not dst.endswith(".key"):
                out.append((dst + ".bias", b[rows]))
            elif np.any(b[rows] != 0):
                raise ConvertError(f"nonzero key bias in '{src}/bias' rows {k * d}..{(k + 1) * d - 1}: "
                                   "whisper.cpp has no key bias")

    for i in (1, 2):
        out.append((f"encoder.conv{i}.weight", get(f"encoder/conv{i}/weight")))
        out.append((f"encoder.conv{i}.bias", get(f"encoder/conv{i}/bias").reshape(-1, 1)))
    out.append(("encoder.positional_embedding", get("encoder/position_encodings/encodings")))
    for i in range(hp[4]):
        s, g = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        fused(f"{s}/self_attention/linear_0", [f"{g}.attn.query", f"{g}.attn.key", f"{g}.attn.value"], d_audio)
        linear(f"{s}/self_attention/linear_1", f"{g}.attn.out")
        norm(f"{s}/self_attention/layer_norm", f"{g}.attn_ln")
        norm(f"{s}/ffn/layer_norm", f"{g}.mlp_ln")
        linear(f"{s}/ffn/linear_0", f"{g}.mlp.0")
        linear(f"{s}/ffn/linear_1", f"{g}.mlp.2")
    norm("encoder/layer_norm", "encoder.ln_post")
    out.append(("decoder.token_embedding.weight", get("decoder/embeddings/weight")))
    out.append(("decoder.positional_embedding", get("decoder/position_encodings/encodings")))
    for i in range(hp[8]):
        s, g = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        fused(f"{s}/self_attention/linear_0", [f"{g}.attn.query", f"{g}.attn.key", f"{g}.attn.value"], d_text)
        linear(f"{s}/self_attention/linear_1", f"{g}.attn.out")
        norm(f"{s}/self_attention/layer_norm", f"{g}.attn_ln")
        linear(f"{s}/attention/linear_0", f"{g}.cross_attn.query")
        fused(f"{s}/attention/linear_1", [f"{g}.cross_attn.key", f"{g}.cross_attn.value"], d_text)
        linear(f"{s}/attention/linear_2", f"{g}.cross_attn.out")
        norm(f"{s}/attention/layer_norm", f"{g}.cross_attn_ln")
        norm(f"{s}/ffn/layer_norm", f"{g}.mlp_ln")
        linear(f"{s}/ffn/linear_0", f"{g}.mlp.0")
        linear(f"{s}/ffn/linear_1", f"{g}.mlp.2")
    norm("decoder/layer_norm", "decoder.ln")
    for name, a in out:
        if a.dtype.kind != "f":
            raise ConvertError(f"tensor for '{name}' has dtype {a.dtype}; only float16/float32 weights are supported")
    return hp, out


def tensor_header(name, ggml_type, shape):
    """What precedes a ggml tensor's raw data: n_dims, name length, type, dims innermost first, name."""
    nb = name.encode()
    return struct.pack(f"<3i{len(shape)}i", len(shape), len(nb), ggml_type, *reversed(shape)) + nb


def write_atomic(path, chunks):  # chunks: any iterable of bytes-like objects, written as they are produced
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(fd, "wb") as f:
            for c in chunks:
                f.write(c)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def convert(ct2_dir, assets, out_path):
    hp, tensors = map_tensors(read_ct2(os.path.join(ct2_dir, "model.bin")))
    n_vocab, n_mels = hp[0], hp[9]
    with np.load(os.path.join(assets, "mel_filters.npz")) as npz:
        if f"mel_{n_mels}" not in npz:
            raise ConvertError(f"{assets}/mel_filters.npz has no 'mel_{n_mels}' (keys: {sorted(npz.keys())})")
        mel = np.ascontiguousarray(npz[f"mel_{n_mels}"], dtype="<f4")
    tik = os.path.join(assets, "multilingual.tiktoken" if n_vocab >= 51865 else "gpt2.tiktoken")
    with open(tik, "rb") as f:
        vocab = [base64.b64decode(line.split()[0]) for line in f if line.strip()]

    def chunks():
        yield struct.pack("<12i2i", GGML_MAGIC, *hp, *mel.shape) + mel.tobytes() + struct.pack("<i", len(vocab))
        yield b"".join(struct.pack("<i", len(tok)) + tok for tok in vocab)
        for name, a in tensors:
            ggml_type, dtype = (F32, "<f4") if a.ndim == 1 or name in F32_2D else (F16, "<f2")
            yield tensor_header(name, ggml_type, a.shape)
            yield np.ascontiguousarray(a, dtype=dtype)  # no copy when already f16 and contiguous

    write_atomic(out_path, chunks())
    return hp, len(vocab), len(tensors)


def read_ggml(path):
    """An f16 ggml file: the 11 hyper-parameters, the raw mel+vocab bytes, and [(name, type, shape, array)]."""
    r = Reader(path)
    magic, *hp = r.unpack("12i")
    if magic != GGML_MAGIC:
        raise ConvertError(f"{path}: bad magic {magic:#x}, not a ggml file")
    if hp[10] != FTYPE_F16:
        raise ConvertError(f"{path}: ftype {hp[10]}, expected {FTYPE_F16} (mostly f16)")
    start = r.pos
    rows, cols = r.unpack("2i")
    r.take(4 * rows * cols)
    for _ in range(r.unpack("i")[0]):
        r.take(r.unpack("i")[0])
    middle, tensors = bytes(r.buf[start:r.pos]), []
    while not r.at_end():
        n_dims, name_len, ggml_type = r.unpack("3i")
        shape = tuple(reversed(r.unpack(f"{n_dims}i")))
        name = bytes(r.take(name_len)).decode()
        if ggml_type not in (F32, F16):
            raise ConvertError(f"{path}: tensor '{name}' has ggml type {ggml_type}; expected f32 (0) or f16 (1)")
        dtype = np.dtype("<f4" if ggml_type == F32 else "<f2")
        data = np.frombuffer(r.take(dtype.itemsize * math.prod(shape)), dtype=dtype).reshape(shape)
        tensors.append((name, ggml_type, shape, data))
    return hp, middle, tensors


def q8_0_blocks(a):
    """Q8_0: per 32 values d = max|x|/127, q = round(x * (1/d)) in [-127, 127] (q = 0 when d = 0); stored as
    f16 d + 32 int8. All float32; multiplying by 1/d (as whisper.cpp does) and rounding half to even (numpy) are
    what reproduce the pinned output hash: x/d or half-away-from-zero each change ~2000 of 36M values."""
    x = a.astype(np.float32).reshape(-1, QK)
    d = np.abs(x).max(axis=1) / np.float32(127)
    with np.errstate(divide="ignore"):
        inv_d = np.where(d > 0, np.float32(1) / d, np.float32(0))
    q = np.round(x * inv_d[:, None])
    blocks = np.empty(len(d), dtype=[("d", "<f2"), ("q", "i1", QK)])
    blocks["d"], blocks["q"] = d, np.clip(q, -127, 127)
    return blocks.tobytes()


def quantize(in_path, out_path):
    hp, middle, tensors = read_ggml(in_path)
    quantized = [len(s) == 2 and "positional_embedding" not in n and s[-1] % QK == 0 for n, _, s, _ in tensors]

    def chunks():
        yield struct.pack("<12i", GGML_MAGIC, *hp[:10], FTYPE_Q8_0) + middle
        for (name, ggml_type, shape, a), q in zip(tensors, quantized):
            yield tensor_header(name, Q8_0 if q else ggml_type, shape)
            if not q:
                yield a
                continue
            blocks = a.reshape(-1, QK)
            for i in range(0, len(blocks), 1 << 16):  # bounded temporaries for the big token embedding
                yield q8_0_blocks(blocks[i:i + (1 << 16)])

    write_atomic(out_path, chunks())
    return sum(quantized), len(tensors)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="CTranslate2 model dir -> ggml f16")
    c.add_argument("--ct2-dir", required=True)
    c.add_argument("--assets", required=True, help="openai-whisper's whisper/assets directory")
    c.add_argument("--out", required=True)
    q = sub.add_parser("quantize", help="ggml f16 -> ggml Q8_0")
    q.add_argument("--in", dest="inp", required=True)
    q.add_argument("--out", required=True)
    q.add_argument("--type", required=True, choices=["q8_0"])
    args = p.parse_args(argv)
    try:
        if args.cmd == "convert":
            hp, n_vocab, n_tensors = convert(args.ct2_dir, args.assets, args.out)
            print(f"wrote {args.out}: hparams {hp}, {n_vocab} tokens, {n_tensors} tensors")
        else:
            n_q, n_tensors = quantize(args.inp, args.out)
            print(f"wrote {args.out}: {n_q} of {n_tensors} tensors Q8_0")
    except (ConvertError, OSError) as e:
        print(f"ct2_to_ggml: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
