"""Per-chunk cost of the relay's JSON work, in microseconds (`python -m bench.relay_micro`).

What one upstream chunk costs the gateway: decoding it, normalising it (our id, created and
model, tool-call deltas, usage held back) and encoding it again; compared with a byte-level
substitution of `id` and `model` that would relay the rest verbatim. Single process, no I/O.
"""

from __future__ import annotations

import json
import re
import timeit

import msgspec

from app.application.llm.chunks import ChunkNormaliser

CHUNK = (
    b'{"id":"chatcmpl-upstream-0123456789","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"upstream-model","system_fingerprint":"fp_abc","choices":[{"index":0,'
    b'"delta":{"content":"word "},"logprobs":null,"finish_reason":null}]}'
)
_ID = re.compile(rb'"id":"[^"]*"')
_MODEL = re.compile(rb'"model":"[^"]*"')


def per_chunk_us(fn: object, number: int = 20000) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6  # type: ignore[arg-type]


def main() -> None:
    normaliser = ChunkNormaliser("chatcmpl-ours", "public-model", 1700000001)
    decode, encode = msgspec.json.Decoder().decode, msgspec.json.Encoder().encode
    text = CHUNK.decode()
    rows = {
        "stdlib json: loads + dumps": lambda: json.dumps(json.loads(text), separators=(",", ":")).encode(),
        "msgspec: decode + encode": lambda: encode(decode(text)),
        "stdlib json + normalise": lambda: json.dumps(normaliser.normalise(json.loads(text))).encode(),
        "msgspec + normalise (the gateway)": lambda: encode(normaliser.normalise(decode(text))),
        "bytes: substitute id and model": lambda: _MODEL.sub(b'"model":"public-model"', _ID.sub(b'"id":"x"', CHUNK)),
    }
    for name, fn in rows.items():
        print(f"| {name} | {per_chunk_us(fn):.2f} |")


if __name__ == "__main__":
    main()
