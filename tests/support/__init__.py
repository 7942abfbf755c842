"""Builders and polling helpers shared by the tests (no tests of its own).

- :mod:`tests.support.names`: unique names, a free port, a second client on a server.
- :mod:`tests.support.polling`: :func:`eventually` (bounded polling) and the jsflow tasks
  still running (for "leaves nothing behind" checks).
- :mod:`tests.support.streams`: what a stream or consumer holds, flow sources and messages,
  task requests.
- :mod:`tests.support.tasks`: tiny task definitions several task tests need.
- :mod:`tests.support.watch`: reading changes of a watch, consumers of a bucket.
- :mod:`tests.support.peers`: fake TCP peers that are not a NATS server (connect tests).
- :mod:`tests.support.limits`: the rate limiter's over-admission check.
- :mod:`tests.support.processes`: whether an OS process is alive.
"""
