"""The first module the import workers' fork server imports (`ingest.parallel`); only it.

A worker is forked from the fork server, and the pool of an import reads whether
a worker is alive through the fork server: a fork server that died would break
the pool of an import still under way. `systemctl stop` sends SIGTERM to every
process of the service (KillMode=control-group), and Ctrl-C sends SIGINT to the
whole process group, while the service itself finishes the files it has started
(`ingest.watch`). So the fork server ignores both signals, and the workers it
forks inherit that. It ends by itself when no process that uses it is left (the
service, and its workers, which end with the service: `ingest.parallel`).

It then imports `ingest.parallel`, so every worker starts with the decoders loaded.
"""

from __future__ import annotations

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)

import ingest.parallel  # noqa: E402, F401 - loaded once here, inherited by every worker
