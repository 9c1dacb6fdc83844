"""The measurement harness of issue 4: hubbub against a hand-written ``websockets`` peer.

``python -m bench compare`` runs the six scenarios against both servers (medians of
3 runs), prints the hubbub ÷ peer table and writes ``docs/benchmarks.md`` and its
chart. ``python -m bench run`` runs scenarios once against one server (the smoke
test uses it), ``python -m bench profile`` runs one under py-spy.

Modules: ``wire`` (client-side RFC 6455: pre-masked frames, a frame splitter),
``loadgen`` (the load generator worker: one epoll loop over raw sockets),
``harness`` (server processes pinned to a core, the worker fleet),
``scenarios`` (the six scenarios), ``report`` (table, markdown, chart),
``profile`` (py-spy, tracemalloc), ``memtrace`` (hubbub under tracemalloc),
``peer`` (the baseline server). ``FINDINGS.md`` is the hand-written analysis the
report includes; ``last-run.json`` the figures behind the current docs/benchmarks.md
(``python -m bench compare --from-raw bench/last-run.json`` renders them again).
(``cluster_fanout`` and ``leak_cycles`` are separate tools.)

Nothing is imported here: ``python -m bench.peer`` must start with no more than the
peer itself needs (its resident memory is measured).
"""
