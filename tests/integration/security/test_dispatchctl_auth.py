"""dispatchctl over mTLS with tokens from a file, a flag or the environment."""

from __future__ import annotations

from pathlib import Path

from tests.integration.dispatchctl import Dispatchctl
from tests.integration.security.conftest import StartServer, token
from tests.pki import Pki


async def test_dispatchctl_with_mtls_and_tokens(
    start_server: StartServer, pki: Pki, tmp_path: Path
) -> None:
    srv = await start_server(mtls=True)
    ca = ("--ca", str(pki.ca.cert_path))
    ctl = Dispatchctl(
        f"127.0.0.1:{srv.port}",
        (*ca, "--cert", str(pki.client.cert_path), "--key", str(pki.client.key_path)),
    )
    token_file = tmp_path / "admin.token"
    token_file.write_text(token("admin") + "\n")

    run = await ctl(
        "--token-file", str(token_file), "queue", "set", "q", "--width", "2", "--create"
    )
    assert run.code == 0, run.err
    run = await ctl("queues", env={"DISPATCHCTL_TOKEN": token("admin")})
    assert run.code == 0, run.err
    assert run.out.splitlines()[1].split()[:5] == ["q", "0", "0", "0", "2"]

    nobody = await ctl("queues")
    assert nobody.code == 1
    assert "UNAUTHENTICATED: missing bearer token" in nobody.err
    submitter = await ctl("--token", token("submit"), "drain")
    assert submitter.code == 1
    assert "PERMISSION_DENIED: Drain needs the admin role; submit has submit" in submitter.err
    no_cert = await Dispatchctl(ctl.target, ca)(
        "--timeout", "5", "--token", token("admin"), "queues"
    )
    assert no_cert.code == 1
    assert "UNAVAILABLE" in no_cert.err
