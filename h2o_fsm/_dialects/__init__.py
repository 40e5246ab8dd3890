"""The protocol dialects: what differs between the 2023 H2O server and chat-ui as it is today."""

from __future__ import annotations
