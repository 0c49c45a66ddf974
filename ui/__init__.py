"""``mailgem ui``: a local web app for a fabric's connections and a job's Email gem (the browser
dialogs). It sits above the runner and calls the runner's, gems', fabric's and connections' APIs;
nothing below imports it. Needs the ``ui`` extra (Starlette, uvicorn, ruamel.yaml).

This ``__init__`` imports nothing: the CLI loads :mod:`mailgem.ui.command` (standard library only)
for every ``mailgem`` command, and the web stack only when ``mailgem ui`` runs. The app is
:func:`mailgem.ui.app.create_app`.
"""
