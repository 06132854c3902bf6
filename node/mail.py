"""Sending email through the operator's SMTP server, never in the way of a request or a worker.

Each message is handed over after the transaction that decided it has committed, and sent by a
task of its own: a few at a time, each within the server's timeout, at most `QUEUED_MAX`
waiting. A message that cannot be sent is logged by its kind only, never by its address or
content (docs/POLICY.md, "Email (optional)"), and is not retried: what caused it (a reply, an
address change) is already stored, and the member can ask for another link.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib

from node.config import SmtpSettings, SmtpTls

log = logging.getLogger(__name__)

CONCURRENT_SENDS = 2
QUEUED_MAX = 500
# On shutdown, sends under way get this long to finish before they are cancelled.
CLOSE_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class Mail:
    to: str = field(repr=False)
    subject: str
    body: str = field(repr=False)
    # What the message is for ("confirmation", "recovery", "reply"): all the log may say.
    kind: str


class Mailer:
    def __init__(self, smtp: SmtpSettings) -> None:
        self.smtp = smtp
        self._sending = asyncio.Semaphore(CONCURRENT_SENDS)
        self._tasks: set[asyncio.Task[None]] = set()

    def send_later(self, mail: Mail) -> None:
        """Queue `mail` and return at once."""
        if len(self._tasks) >= QUEUED_MAX:
            log.warning("email not sent (%s): %d messages already waiting", mail.kind, QUEUED_MAX)
            return
        task = asyncio.get_running_loop().create_task(self._send(mail))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def idle(self) -> None:
        """Wait until every queued message has been sent or given up on."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    async def close(self) -> None:
        if not self._tasks:
            return
        _, late = await asyncio.wait(list(self._tasks), timeout=CLOSE_GRACE_SECONDS)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def _send(self, mail: Mail) -> None:
        message = EmailMessage()
        message["From"] = self.smtp.from_address
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message["Message-ID"] = make_msgid(domain=self.smtp.from_address.rpartition("@")[2])
        message.set_content(mail.body)
        try:
            async with self._sending, asyncio.timeout(self.smtp.timeout_seconds):
                await aiosmtplib.send(
                    message,
                    hostname=self.smtp.host,
                    port=self.smtp.port,
                    username=self.smtp.user,
                    password=self.smtp.password,
                    use_tls=self.smtp.tls is SmtpTls.TLS,
                    start_tls=self.smtp.tls is SmtpTls.STARTTLS,
                    timeout=self.smtp.timeout_seconds,
                )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            # The exception's text may quote the recipient: only its type is logged.
            log.warning("email not sent (%s): %s", mail.kind, type(error).__name__)
        else:
            log.info("email sent (%s)", mail.kind)
