"""Hub cards render offline, their YAML parses, and the push path talks to a recording loopback server."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from peft import LoraConfig, get_peft_model

from hf_trust.errors import HFTrustConfigError, HFTrustFileNotFoundError, HFTrustTypeError
from hf_trust.hub_cards import TrustCheck, TrustReport, push_adapter, render_card
from hf_trust.hub_cards.card import LIFECYCLE_RISKS
from tests.conftest import make_tiny_llama


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_card_renders_with_metadata_and_trust_report():
    report = TrustReport(
        checks=[TrustCheck("backdoor scan", "passed", summary="no sensitive layer", metrics={"removed_fraction": 0.0})]
    )
    card = render_card(
        "me/thanora-adapter",
        method="thanora",
        base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
        training_data={"tasks": "qa, math, code", "examples": 3000},
        metrics={"mean score": 0.41},
        trust_report=report,
    )
    text = str(card)
    meta = _front_matter(text)
    assert meta["library_name"] == "peft"
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert set(meta["tags"]) >= {"hf-trust", "thanora"}
    assert meta["hf_trust"]["metrics"] == {"mean score": 0.41}
    assert meta["hf_trust"]["trust_report"]["backdoor scan"]["status"] == "passed"
    assert "## Trust report" in text and "ThanoRA" in text
    # every life-cycle risk appears, unchecked ones marked so
    for risk in LIFECYCLE_RISKS:
        assert f"| {risk} |" in text
    assert text.count("| not checked |") == len(LIFECYCLE_RISKS) - 1
    assert "| mean score | 0.41 |" in text


def test_bad_status_is_refused():
    with pytest.raises(HFTrustConfigError, match="status must be one of"):
        TrustCheck("forgetting", status="ok")


class _Recorder(BaseHTTPRequestHandler):
    calls: list = []

    def log_message(self, *args):  # keep test output clean
        pass

    def _reply(self, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.calls.append((self.path, data))
        if self.headers.get("Authorization") == "Bearer hf_revoked":  # a token the Hub no longer accepts
            body = b'{"error": "Invalid credentials in Authorization header"}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        base = f"http://127.0.0.1:{self.server.server_port}"
        if self.path == "/api/repos/create":
            name = json.loads(data)["name"]
            self._reply({"url": f"{base}/me/{name}", "name": f"me/{name}", "id": "1"})
        elif self.path == "/api/validate-yaml":
            yaml.safe_load(json.loads(data)["content"].split("---\n")[1])  # the card's YAML must parse
            self._reply({"errors": [], "warnings": []})
        elif "/preupload/" in self.path:
            files = json.loads(data)["files"]
            self._reply({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})
        elif "/commit/" in self.path:
            self._reply({"commitUrl": f"{base}/me/repo/commit/abc123", "commitOid": "abc123", "pullRequestUrl": None})
        else:
            self.send_response(404)
            self.end_headers()


@pytest.fixture
def hub_server(monkeypatch):
    # The suite runs offline; this fixture's endpoint is a server on loopback, so allow HTTP to it.
    import huggingface_hub.constants
    import huggingface_hub.utils

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    # huggingface_hub < 1 caches one requests session per thread and mounts its offline adapter when the session is
    # built: a session an earlier test built offline would refuse the loopback Hub, and one built here must not
    # outlive the fixture.
    reset_sessions = getattr(huggingface_hub.utils, "reset_sessions", lambda: None)
    reset_sessions()
    _Recorder.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # huggingface_hub < 1 parses the URLs a Hub returns against its configured endpoint (HF_ENDPOINT), as a
    # user of a private Hub sets it, whatever endpoint= the call names.
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    yield f"http://127.0.0.1:{server.server_port}", _Recorder.calls
    server.shutdown()
    reset_sessions()


def test_push_adapter_creates_repo_and_uploads_card_and_weights(hub_server, tmp_path):
    endpoint, calls = hub_server
    model = get_peft_model(make_tiny_llama(), LoraConfig(r=2, target_modules=["q_proj"]))
    model.peft_config["default"].base_model_name_or_path = "local/tiny-llama"
    info = push_adapter(
        model,
        "me/tiny-adapter",
        endpoint=endpoint,
        token="hf_test",
        metrics={"loss": 1.25},
        trust_report={"checks": [{"risk": "forgetting", "status": "flagged", "summary": "-3 points"}]},
    )
    paths = [p for p, _ in calls]
    assert paths[0] == "/api/repos/create"
    assert json.loads(calls[0][1])["name"] == "tiny-adapter"
    assert any(p.startswith("/api/models/me/tiny-adapter/preupload/") for p in paths)
    assert paths[-1].startswith("/api/models/me/tiny-adapter/commit/")
    commit_body = next(d for p, d in calls if "/commit/" in p)
    ops = [json.loads(line) for line in commit_body.decode().splitlines() if line.strip()]
    files = {op["value"]["path"]: op["value"] for op in ops if op["key"] == "file"}
    assert {"README.md", "adapter_config.json", "adapter_model.safetensors"} <= set(files)
    card = base64.b64decode(files["README.md"]["content"]).decode()
    meta = _front_matter(card)
    assert meta["base_model"] == "local/tiny-llama"
    assert meta["hf_trust"]["trust_report"]["forgetting"]["status"] == "flagged"
    assert info.oid == "abc123"


def commit_files(calls: list) -> dict[str, bytes]:
    """``{path in repo: bytes}`` of every file in the (last) commit the recorder received."""
    body = [d for p, d in calls if "/commit/" in p][-1]
    ops = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
    return {op["value"]["path"]: base64.b64decode(op["value"]["content"]) for op in ops if op["key"] == "file"}


def test_push_adapter_rejects_bad_input(tmp_path):
    with pytest.raises(HFTrustConfigError, match="user/name"):
        push_adapter(tmp_path, "no-slash")
    with pytest.raises(HFTrustFileNotFoundError, match="adapter_config.json; pass a PEFT model or a folder"):
        push_adapter(tmp_path, "me/x", endpoint="http://127.0.0.1:9")
    with pytest.raises(HFTrustFileNotFoundError, match="does not exist; pass a folder written by save_pretrained"):
        push_adapter(tmp_path / "missing", "me/x", endpoint="http://127.0.0.1:9")
    with pytest.raises(HFTrustTypeError, match="PeftModel or an adapter folder"):
        push_adapter(object(), "me/x")


def test_push_from_folder_leaves_folder_untouched(hub_server, tmp_path):
    endpoint, _ = hub_server
    model = get_peft_model(make_tiny_llama(), LoraConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    push_adapter(tmp_path, "me/from-folder", endpoint=endpoint, token="hf_test")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
