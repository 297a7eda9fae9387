"""The billing sender (ingest.billing) against a test MLLP receiver, on both databases.

The receiver answers AA, AE, AR, nothing, or closes mid-message; a connection can be
refused. Whatever happens, messages go in outbox order, a message without a usable
answer is sent again with the same control ID, and an acknowledged one never again.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from db import outbox
from ingest.billing import (
    BillingJob,
    MllpClient,
    MllpError,
    MllpTarget,
    frame,
    parse_ack,
    send_pending,
)
from tests.db.test_outbox import decision, messages, signed, stored
from tests.ingest.mllp_receiver import MllpReceiver, always

__all__ = ["stored"]


def client(address: str, ack_seconds: float = 5.0) -> MllpClient:
    return MllpClient(MllpTarget.parse(address, ack_seconds=ack_seconds))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_frames_and_target_settings() -> None:
    assert frame("MSH|x\r") == b"\x0bMSH|x\r\x1c\x0d"
    target = MllpTarget.parse("[::1]:2575", tls=True)
    assert (target.host, target.port, target.tls) == ("::1", 2575, True)
    for bad in ("billing", "billing:", "billing:99999", ":2575"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            MllpTarget.parse(bad)


def test_parse_ack_codes_text_and_control_id() -> None:
    ack = b"MSH|^~\\&|BILL|F|PUMPTRAIL|C|20260101||ACK^P03^ACK|9|P|2.5.1\rMSA|AE|C1|bad NPI\r"
    assert parse_ack(ack, "C1").code == "AE" and parse_ack(ack, "C1").text == "bad NPI"
    enhanced = ack.replace(b"MSA|AE|C1|bad NPI", b"MSA|CA|C1")
    assert parse_ack(enhanced, "C1").code == "AA"
    with_err = ack + b"ERR||||E||||provider 123 unknown\r"
    assert parse_ack(with_err, "C1").text == "bad NPI; provider 123 unknown"
    with pytest.raises(MllpError, match="not C2"):
        parse_ack(ack, "C2")
    with pytest.raises(MllpError, match="not an HL7 ACK"):
        parse_ack(b"hello", "C1")
    with pytest.raises(MllpError, match="not AA, AE or AR"):
        parse_ack(ack.replace(b"MSA|AE", b"MSA|XX"), "C1")


def test_aa_acknowledges_every_message_in_order_once(
    stored: tuple[Engine, list[str]],
) -> None:
    engine, ids = stored
    signed(engine, ids[0], decision())
    signed(engine, ids[1], decision())
    with MllpReceiver() as receiver:
        result = send_pending(engine, client(receiver.address))
        queued = messages(engine)
        # A revision of a sent visit: the reversal goes before the new charges.
        signed(engine, ids[0], decision(units=10))
        again = send_pending(engine, client(receiver.address))
    assert (result.sent, result.acknowledged, result.error) == (2, 2, None)
    assert again.acknowledged == 2
    everything = messages(engine)
    assert receiver.received == [m.control_id for m in everything]
    assert [m.kind for m in everything] == ["charges", "charges", "reversal", "charges"]
    assert all(m.status == outbox.ACKNOWLEDGED for m in everything)
    assert all(count == 1 for count in receiver.acked.values())
    assert receiver.messages[queued[0].control_id] == queued[0].message


@pytest.mark.parametrize("code", ["AE", "AR"])
def test_a_rejection_is_held_with_its_text_and_the_next_message_goes_on(
    stored: tuple[Engine, list[str]], code: str
) -> None:
    engine, ids = stored
    signed(engine, ids[0], decision())
    signed(engine, ids[1], decision())
    first_id = messages(engine)[0].control_id
    with MllpReceiver(lambda cid, _seen: code if cid == first_id else "AA") as receiver:
        result = send_pending(engine, client(receiver.address))
        assert (result.rejected, result.acknowledged) == (1, 1)
        # Held: a later pass does not send it again until it is resent by hand.
        assert send_pending(engine, client(receiver.address)).sent == 0
    rejected, accepted = messages(engine)
    assert rejected.status == outbox.REJECTED and rejected.ack_code == code
    assert rejected.ack_text == f"unknown provider ({code})"
    assert accepted.status == outbox.ACKNOWLEDGED
    assert receiver.received == [rejected.control_id, accepted.control_id]


@pytest.mark.parametrize("trouble", ["silence", "close"])
def test_no_answer_or_a_closed_connection_resends_with_the_same_control_id(
    stored: tuple[Engine, list[str]], trouble: str
) -> None:
    engine, ids = stored
    signed(engine, ids[0], decision())
    signed(engine, ids[1], decision())
    first_id = messages(engine)[0].control_id

    def script(control_id: str, seen: int) -> str:
        return trouble if control_id == first_id and seen == 0 else "AA"

    with MllpReceiver(script) as receiver:
        failed = send_pending(engine, client(receiver.address, ack_seconds=0.5))
        assert failed.error is not None and failed.acknowledged == 0
        first, second = messages(engine)
        # Sent once, no answer: shown as sent, still pending; the next one waited.
        assert (first.shown_status, first.attempts) == ("sent", 1)
        assert (second.shown_status, second.attempts) == ("ready", 0)
        result = send_pending(engine, client(receiver.address))
    assert result.acknowledged == 2 and result.error is None
    first, second = messages(engine)
    assert receiver.received == [first.control_id, first.control_id, second.control_id]
    assert receiver.acked == {first.control_id: 1, second.control_id: 1}
    assert first.attempts == 2 and first.status == outbox.ACKNOWLEDGED


def test_a_refused_connection_leaves_the_message_pending(
    stored: tuple[Engine, list[str]],
) -> None:
    engine, ids = stored
    signed(engine, ids[0], decision())
    result = send_pending(engine, client(f"127.0.0.1:{free_port()}"))
    assert result.error is not None and "ConnectionRefused" in result.error
    (message,) = messages(engine)
    assert message.status == outbox.PENDING


def test_the_job_backs_off_logs_an_outage_once_and_sends_when_billing_answers(
    stored: tuple[Engine, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    engine, ids = stored
    signed(engine, ids[0], decision())
    port = free_port()
    stop = threading.Event()
    job = BillingJob(
        lambda: engine,
        MllpTarget("127.0.0.1", port, ack_seconds=2.0),
        stop,
        idle_seconds=0.05,
        retry_max_seconds=0.2,
        outage_log_seconds=60.0,
    )
    job_thread = threading.Thread(target=job.run)
    with caplog.at_level(logging.INFO, logger="ingest.billing"):
        job_thread.start()
        try:
            deadline = time.monotonic() + 10
            while job.failures < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert job.failures >= 3
            with MllpReceiver(always("AA"), port=port):
                while messages(engine)[0].status != outbox.ACKNOWLEDGED:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
        finally:
            stop.set()
            job_thread.join(10)
    events = [r.getMessage() for r in caplog.records]
    assert sum("billing_unreachable" in e for e in events) == 1
    assert any("billing_reachable" in e for e in events)


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "billing test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "billing.pem", folder / "billing.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_tls_sends_to_a_verified_listener_and_refuses_an_unknown_one(
    stored: tuple[Engine, list[str]], tmp_path: Path
) -> None:
    import ssl

    engine, ids = stored
    signed(engine, ids[0], decision())
    cert_file, key_file = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    with MllpReceiver(always("AA")) as receiver:
        plain = receiver.server.socket
        receiver.server.socket = context.wrap_socket(plain, server_side=True)
        untrusted = MllpClient(MllpTarget.parse(receiver.address, tls=True, ack_seconds=5))
        refused = send_pending(engine, untrusted)
        assert refused.error is not None and "CERTIFICATE_VERIFY_FAILED" in refused.error
        trusted = MllpClient(
            MllpTarget.parse(receiver.address, tls=True, ca_file=str(cert_file), ack_seconds=5)
        )
        result = send_pending(engine, trusted)
        trusted.close()
    assert result.acknowledged == 1 and result.error is None
    (message,) = messages(engine)
    assert receiver.received == [message.control_id]
