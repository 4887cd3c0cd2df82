"""`helm test`: the router answers /healthz and /readyz, then POST /score with a generated 2 s tone.

Runs in the router image (Python + httpx). Exits non-zero, saying why, on any failure.
"""

import io
import json
import math
import os
import struct
import sys
import time
import wave

import httpx

URL = os.environ["ROUTER_URL"].rstrip("/")
UID, CID, MODEL = os.environ["TEST_UID"], os.environ["TEST_CID"], os.environ.get("TEST_MODEL", "")
TIMEOUT = float(os.environ.get("TEST_TIMEOUT_S", "300"))
API_KEY = os.environ.get("AUDIO_SCORE_API_KEYS", "").split(",")[0].strip()


def tone(seconds: float = 2.0, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        frames = (int(8000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(int(seconds * rate)))
        w.writeframes(b"".join(struct.pack("<h", f) for f in frames))
    return buf.getvalue()


def fail(msg: str) -> None:
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    headers = {"X-API-Key": API_KEY} if API_KEY else {}
    with httpx.Client(timeout=30.0, headers=headers) as client:
        health = client.get(f"{URL}/healthz")
        if health.status_code != 200:
            fail(f"GET /healthz -> {health.status_code} {health.text[:300]}")
        print("GET /healthz ok")
        deadline = time.monotonic() + TIMEOUT
        while True:
            ready = client.get(f"{URL}/readyz")
            if ready.status_code == 200:
                break
            if time.monotonic() > deadline:
                fail(f"GET /readyz still {ready.status_code} after {TIMEOUT:.0f} s: {ready.text[:300]}")
            time.sleep(5)
        print("GET /readyz ok")
        data = {"uid": UID, "cid": CID} | ({"model": MODEL} if MODEL else {})
        files = {"audio": ("tone.wav", tone(), "audio/wav")}
        resp = client.post(f"{URL}/score", data=data, files=files, timeout=TIMEOUT)
        if resp.status_code != 200:
            fail(f"POST /score -> {resp.status_code} {resp.text[:500]}")
        body = resp.json()
        for key in ("sim_score", "audio_sim_score", "text_sim_score"):
            if not isinstance(body.get(key), (int, float)) or not 0.0 <= body[key] <= 1.0:
                fail(f"POST /score: {key} missing or outside [0, 1]: {json.dumps(body)[:500]}")
        for key in ("model", "transcript", "reference_transcript"):
            if not isinstance(body.get(key), str):
                fail(f"POST /score: {key} missing: {json.dumps(body)[:500]}")
        print("POST /score ok:", json.dumps(body))


if __name__ == "__main__":
    main()
