"""Stand-in for ``python -m aioqueue run apps.aioqueue_app:worker`` while that cannot start.

On the main this harness was built against, the CLI imports ``click`` (not a
declared dependency) and builds the ``Worker`` outside the event loop, which
anyio 4.16 refuses (``NoEventLoopError`` from ``anyio.CancelScope()`` in
``Worker.__init__``). This does what ``aioqueue._cli.main.run`` + ``run_worker`` do,
in the same order, but builds the worker inside the loop. The adapter uses the
real CLI as soon as it works.
"""

from __future__ import annotations

import argparse

import anyio

from aioqueue.logging import configure


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concurrency", type=int, default=100)
    args = ap.parse_args()
    configure(fmt="console", level="warning")  # what `--log-level warning` sets

    async def run() -> None:
        from apps.aioqueue_app import make_worker

        await make_worker(args.concurrency).run(handle_signals=True)

    anyio.run(run, backend_options={"use_uvloop": True})


if __name__ == "__main__":
    main()
