"""The local web playground (`charrnn serve`): a page and an HTTP API over the runs in one folder.

  runs.py         which runs may be loaded (the library's run listing, narrowed to RUNS_DIR; by name only)
  requests.py     JSON onto the library's GenerationRequest, plus the server's own caps
  scheduler.py    one thread per loaded model, stepping all its streams together (continuous batching);
                  each character decided by the library's one decoding chain (decoding.Chooser)
  neurons.py      the neuron panel: hidden/cell states from charrnn.internals, the explain cell finder
  app.py          the Starlette app: routes, errors, Host/Origin guard
  server.py       uvicorn: bind, print the address, stop cleanly on SIGINT/SIGTERM
  static/         the page (plain HTML, CSS and JavaScript: no build step, nothing from the network)

Needs the `serve` extra (starlette, uvicorn); `import charrnn.serve` alone imports neither.
"""

from __future__ import annotations


def create_app(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - see app.create_app
    from .app import create_app as make

    return make(*args, **kwargs)
