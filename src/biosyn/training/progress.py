"""What a training run reports while it runs: a JSONL log in its folder, the logger, stdout."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

LOG_FILE = "train_log.jsonl"


class TrainingLog:
    def __init__(self, output: str | os.PathLike, *, echo: bool = True):
        self.path = Path(output) / LOG_FILE
        self.echo = echo

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"time": round(time.time(), 1), **record}) + "\n")

    def epoch(self, record: dict) -> None:
        self.write({"event": "epoch", **record})
        log.info("epoch %d: %s", record["epoch"], record)
        if self.echo:
            print(json.dumps(record), flush=True)
