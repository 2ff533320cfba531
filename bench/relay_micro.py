"""Per-chunk cost of the relay's JSON work, in microseconds (`python -m bench.relay_micro`).

What one upstream chunk costs the gateway: the general path (decode it whole, normalise it:
our id, created and model, tool-call deltas, usage held back; encode it again) against what
the gateway does for a plain content chunk now (`read_chunk`: a typed view of the few fields
it reads, then `ChunkNormaliser.relay`: the upstream's bytes with id, model and created
substituted in place). Single process, no I/O; the lowest of five repeats.
"""

from __future__ import annotations

import json
import timeit

import msgspec

from app.application.llm.chunks import ChunkNormaliser
from app.infrastructure.llm.chunk_view import read_chunk

CHUNK = (
    b'{"id":"chatcmpl-upstream-0123456789","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"upstream-model","system_fingerprint":"fp_abc","choices":[{"index":0,'
    b'"delta":{"content":"word "},"logprobs":null,"finish_reason":null}],"usage":null}'
)
# The same token with logprobs asked for (five alternatives): 0.5 KiB, as OpenAI sends it.
_LOGPROBS = {
    "content": [
        {
            "token": "word",
            "logprob": -0.1,
            "bytes": [119, 111, 114, 100],
            "top_logprobs": [{"token": t, "logprob": -1.5, "bytes": [ord(t)]} for t in "abcde"],
        }
    ],
    "refusal": None,
}
LOGPROBS_CHUNK = CHUNK.replace(
    b'"logprobs":null', b'"logprobs":' + json.dumps(_LOGPROBS, separators=(",", ":")).encode()
)


def per_chunk_us(fn: object, number: int = 20000) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6  # type: ignore[arg-type]


def rows(chunk: bytes) -> dict[str, float]:
    normaliser = ChunkNormaliser("chatcmpl-ours", "public-model", 1700000001)
    decode, encode = msgspec.json.Decoder().decode, msgspec.json.Encoder().encode
    text = chunk.decode()

    def relay() -> object:
        item = read_chunk(chunk)
        assert item is not None
        return normaliser.relay(item)

    assert isinstance(relay(), bytes)  # the plain chunk really takes the byte path
    cases = {
        "stdlib json: loads + dumps": lambda: json.dumps(json.loads(text), separators=(",", ":")).encode(),
        "msgspec: decode + encode": lambda: encode(decode(chunk)),
        "stdlib json + normalise": lambda: json.dumps(normaliser.normalise(json.loads(text))).encode(),
        "msgspec + normalise (the general path)": lambda: encode(normaliser.normalise(decode(chunk))),
        "typed view + bytes relayed, id/model/created substituted (the gateway)": relay,
    }
    return {name: per_chunk_us(fn) for name, fn in cases.items()}


def table() -> str:
    """A Markdown table: µs per chunk, a plain content chunk and one with logprobs."""
    plain, logprobs = rows(CHUNK), rows(LOGPROBS_CHUNK)
    lines = [
        f"| per chunk (µs) | content, {len(CHUNK)} B | content + logprobs, {len(LOGPROBS_CHUNK)} B |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {plain[name]:.2f} | {logprobs[name]:.2f} |" for name in plain]
    return "\n".join(lines)


def main() -> None:
    print(table())


if __name__ == "__main__":
    main()
