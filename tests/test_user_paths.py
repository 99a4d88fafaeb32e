"""What the CLI and SDK do with tokens: the admin token `corral up` leaves in the default data dir goes
to the server on this machine only (``--url`` elsewhere must not hand it to whoever answers there), a
token sent over plain HTTP to another host is warned about, and no command takes a token as an
argument (arguments are world-readable in ``/proc/<pid>/cmdline`` and kept in shell history). Nothing
here connects anywhere: a client is only built."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import typer

from corral.cleartext import CleartextTokenWarning, is_loopback
from corral.cli.main import app
from corral.client import Client
from corral.paths import write_token

ELSEWHERE = "http://198.51.100.7:8765"
"""An address of another machine (TEST-NET-2: documentation only, never routed)."""


@pytest.fixture
def local_admin_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The token `corral up` wrote in the default data directory, and no CORRAL_TOKEN."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.delenv("CORRAL_TOKEN", raising=False)
    monkeypatch.delenv("CORRAL_URL", raising=False)
    (tmp_path / "corral").mkdir()
    write_token(tmp_path / "corral", "corral_local_admin-secret")
    return "corral_local_admin-secret"


def _sent(client: Client) -> str | None:
    with client:
        return client._http.headers.get("authorization")


def test_the_local_admin_token_goes_only_to_a_server_on_this_machine(local_admin_token: str) -> None:
    for here in ("http://127.0.0.1:8765", "http://localhost:9000/api/v1", "http://[::1]:8765"):
        assert _sent(Client(here)) == f"Bearer {local_admin_token}"
    for there in (ELSEWHERE, "https://corral.example.org", "http://127.0.0.1.example.org"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # and no warning either: no token is sent
            assert _sent(Client(there)) is None


def test_a_token_named_for_another_server_is_sent_there(
    local_admin_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORRAL_TOKEN", "corral_mine_secret")
    assert _sent(Client("https://corral.example.org")) == "Bearer corral_mine_secret"
    with pytest.warns(CleartextTokenWarning):
        assert _sent(Client(ELSEWHERE, token="corral_given_secret")) == "Bearer corral_given_secret"


def test_a_token_over_plain_http_to_another_host_is_warned_about(local_admin_token: str) -> None:
    with pytest.warns(CleartextTokenWarning, match="plain HTTP to 198.51.100.7"):
        Client(ELSEWHERE, token="corral_given_secret").close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Client("https://corral.example.org", token="corral_given_secret").close()
        Client("http://127.0.0.1:8765").close()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("corral.example.org", False),
        ("127.0.0.1.example.org", False),
    ],
)
def test_only_this_machine_s_addresses_are_loopback(host: str, loopback: bool) -> None:
    """What `corral server --host` warns about (every address but loopback) and where the local admin
    token may go."""
    assert is_loopback(host) is loopback


def test_no_command_takes_a_token_as_an_argument() -> None:
    """Tokens come from CORRAL_TOKEN or the data dir's file: an option or argument would leave them in
    every user's view of ``ps`` and in shell history."""

    def parameters(command: typer.core.TyperCommand, path: str) -> list[tuple[str, str]]:
        found = [(path, name) for p in command.params for name in (p.name or "", *getattr(p, "opts", ()))]
        if hasattr(command, "commands"):  # a group (typer's own click)
            for name, sub in command.commands.items():
                found += parameters(sub, f"{path} {name}")
        return found

    everything = parameters(typer.main.get_command(app), "corral")
    assert len(everything) > 100  # the whole CLI was walked
    assert [(path, name) for path, name in everything if "token" in name.lower() and "id" not in name] == []
