"""Escalation notices by e-mail: the ``pmgw.notice.*`` events of the outbox, sent over SMTP.

Delivered from the outbox like a webhook (a subscription ``smtp://host:port`` made from this
configuration), so a mail server that is away gets every notice when it is back. One message per
recipient with an address; a notice counts as delivered when the server accepted every one.
"""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field


class SmtpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(25, ge=1, le=65535)
    sender: str = Field("pm-gateway@localhost", pattern=r"^[^@\s]+@[^@\s]+$")
    username: str | None = None
    password: str | None = None
    starttls: bool = Field(False, description="STARTTLS before signing in")
    timeout_s: float = Field(10.0, gt=0, le=120)

    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"


class Mailer:
    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self.sent = 0

    def messages(self, body: str) -> list[EmailMessage]:
        event: dict[str, Any] = orjson.loads(body)
        data = event["data"]
        made = []
        for person in data["recipients"]:
            if not person.get("email"):
                continue
            message = EmailMessage()
            message["From"] = self.config.sender
            message["To"] = f"{person['name']} <{person['email']}>"
            message["Subject"] = data["subject"]
            # The event's id: a resent notice (a retry) is recognisably the same one.
            message["Message-ID"] = f"<{event['id']}.{person['id']}@pm-gateway>"
            message.set_content(f"{data['text']}\n\n(to you as {person['as']}; event {event['id']})\n")
            made.append(message)
        return made

    def send(self, body: str) -> tuple[bool, str | None]:
        """Send a notice to each of its recipients with an address; whether the server took them all."""
        messages = self.messages(body)
        if not messages:
            return True, None
        try:
            with smtplib.SMTP(self.config.host, self.config.port, timeout=self.config.timeout_s) as server:
                if self.config.starttls:
                    server.starttls()
                if self.config.username:
                    server.login(self.config.username, self.config.password or "")
                for message in messages:
                    refused = server.send_message(message)
                    if refused:
                        return False, f"refused: {', '.join(sorted(refused))}"
        except (OSError, smtplib.SMTPException) as error:
            return False, f"{type(error).__name__}: {error}"[:500]
        self.sent += len(messages)
        return True, None
