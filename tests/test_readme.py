"""The README cannot go stale: its curl example and V2 client examples run against a real ``audio-score up``, and
every setting, environment variable and CLI option of the code is documented in it."""

from __future__ import annotations

import itertools
import json
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from conftest import REPO_ROOT, environment_variables

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
SCORE_FIELDS = {"model", "sim_score", "audio_sim_score", "text_sim_score", "transcript", "reference_transcript"}


def code_blocks(language: str) -> list[str]:
    """Fenced blocks of ``language``, also those indented inside a list item (dedented)."""
    pattern = rf"^[ \t]*```{language}\n(.*?)^[ \t]*```"
    return [textwrap.dedent(block) for block in re.findall(pattern, README, flags=re.M | re.S)]


def readme_curl() -> list[str]:
    """The README's /score curl command, as argv (backslash continuations joined)."""
    for block in code_blocks("bash"):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            if line.strip().startswith("curl ") and "/score" in line:
                return shlex.split(line)
    raise AssertionError("README.md has no curl example for /score in a ```bash block")


def form_fields(argv: list[str]) -> dict[str, str]:
    fields = {}
    for flag, value in itertools.pairwise(argv):
        if flag == "-F":
            name, _, val = value.partition("=")
            fields[name] = val
    return fields


def test_curl_example_has_the_seeds_form() -> None:
    argv = readme_curl()
    assert argv[:3] == ["curl", "-X", "POST"]
    assert re.fullmatch(r"http://127\.0\.0\.1:8000/score", argv[3])
    fields = form_fields(argv)
    assert set(fields) == {"uid", "cid", "model", "audio"}
    assert fields["audio"].startswith("@")
    # The model it names is one of the real config.json's keys.
    real_keys = [m["key"] for m in json.loads((REPO_ROOT / "config.json").read_text())["models"]]
    assert fields["model"] in real_keys


def test_curl_example_runs_against_up(up_stack) -> None:
    ws = up_stack.workspace
    argv = readme_curl()
    fields = form_fields(argv)
    uid, cid = fields["uid"], fields["cid"]
    assert (uid, cid) in ws.clips, "the README's uid/cid should be the demo workspace's, so it runs there too"
    clip = ws.clips[(uid, cid)]
    model = ws.model_keys[0]
    substituted = []
    for arg in argv:
        arg = arg.replace("http://127.0.0.1:8000", up_stack.url)
        if arg == f"model={fields['model']}":
            arg = f"model={model}"
        elif arg == f"audio={fields['audio']}":
            arg = f"audio=@{clip}"
        substituted.append(arg)

    curl = shutil.which("curl")
    if curl:
        done = subprocess.run([curl, "-sS", *substituted[1:]], capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
    else:  # a CI machine without curl: send the very same form with httpx
        form = form_fields(substituted)
        audio_path = Path(form.pop("audio").removeprefix("@"))
        with audio_path.open("rb") as fh:
            response = httpx.post(substituted[3], data=form, files={"audio": fh}, timeout=180)
        assert response.status_code == 200, response.text
        answer = response.json()
    assert set(answer) >= SCORE_FIELDS
    assert answer["model"] == model
    assert answer["sim_score"] == pytest.approx(1.0, abs=1e-3)  # the clip against itself


@pytest.mark.parametrize("client", ["tritonclient", "InferenceGRPCClient"])
def test_v2_client_examples_run_against_up(up_stack, client: str, tmp_path: Path) -> None:
    blocks = [b for b in code_blocks("python") if client in b]
    assert len(blocks) == 1, f"README.md should have one python example using {client}"
    ws = up_stack.workspace
    code = (
        blocks[0]
        .replace("127.0.0.1:8080", f"127.0.0.1:{up_stack.predictor_port}")
        .replace("127.0.0.1:8081", f"127.0.0.1:{up_stack.grpc_port}")
        .replace('"whisper-small"', f'"{ws.model_keys[0]}"')
        .replace('"my-recording.wav"', repr(str(ws.clips[("video1", "clip1")])))
    )
    script = tmp_path / "example.py"
    script.write_text(code)
    # Its own process, as a user's would be (tritonclient's and kserve's gRPC stubs cannot share one).
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), "the example prints its answer"
    if client == "tritonclient":
        assert float(done.stdout.split()[0]) == pytest.approx(1.0, abs=1e-3)
    else:
        assert "sim_score" in done.stdout and "transcript" in done.stdout


def test_every_setting_is_documented() -> None:
    from audio_score.settings import FileConfig, ModelSpec

    variables = environment_variables()
    assert {"AUDIO_SCORE_PREDICTOR_URL", "AUDIO_SCORE_BODY_TIMEOUT_S", "JOB_COMPLETION_INDEX"} <= variables
    assert {"AUDIO_SCORE_CONFIG", "AUDIO_SCORE_MODEL_KEYS", "POD_NAMESPACE"} <= variables
    missing = sorted(v for v in variables if f"`{v}`" not in README)
    assert not missing, f"README.md's Configuration section lacks {missing}"
    fields = set(FileConfig.model_fields) - {"models"}
    missing = sorted(f for f in fields if f"`{f}`" not in README)
    missing += sorted(f for f in ModelSpec.model_fields if f"`models[].{f}`" not in README and f"`{f}`" not in README)
    assert not missing, f"README.md's config.json table lacks {missing}"


def test_every_subcommand_and_option_is_documented() -> None:
    from audio_score.cli import build_parser, commands

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name in commands():
        assert f"audio-score {name}" in README, name
    for name in ("up", "score"):
        options = [s for action in subparsers[name]._actions for s in action.option_strings if s.startswith("--")]
        missing = [o for o in options if o not in {"--help", "--config", "--log-level"} and o not in README]
        assert not missing, f"README.md does not mention {name} {missing}"


def test_relative_links_exist() -> None:
    prose = re.sub(r"`[^`\n]*`", "", README)  # a regex in a code span (a generated table's) is not a link
    for target in re.findall(r"\]\(([^)#:]+)\)", prose):
        if target.startswith("../"):
            continue  # the shared folder beside the checkout
        assert (REPO_ROOT / target).exists(), target


def test_make_targets_named_in_the_readme_exist() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    for target in sorted(set(re.findall(r"`make ([a-z0-9-]+)", README))):
        assert re.search(rf"^{re.escape(target)}:", makefile, flags=re.M), f"make {target}"
